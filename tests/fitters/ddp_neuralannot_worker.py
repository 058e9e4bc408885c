"""One rank of the 2-process NeuralAnnot test (run by torchrun from test_neuralannot.py).

Starts from other weights on each rank (rank 0's become everyone's), trains NeuralAnnot with the depth recipe on 11 people of the bundled sample (uneven
shares: 6 and 5 people, batch 5, so a per-rank step count would differ), annotates
its share of the images, and writes what the test compares to OUT/rank<r>.pt.
"""

import sys
from pathlib import Path

import torch

from fit3d.body_models.anny_model import AnnyModel
from fit3d.data.readers import read_coco
from fit3d.fitters.neuralannot import NeuralAnnot, TrainConfig
from fit3d.mocap import bundled_pose_set
from fit3d.pipeline import neuralannot_target, run_neuralannot
from fit3d.pipeline.distributed import finish, init_from_env
from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.mocap.pose_set import load_pose_set


def main(sample_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist = init_from_env("cpu")
    model = AnnyModel()
    torch.manual_seed(dist.rank)  # other initial weights on each rank: rank 0's must become everyone's
    net = KeypointRegressor(len(model.keypoint_convention), model.num_body_joints, model.num_betas, width=32, blocks=1)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(epochs=2, min_steps_per_epoch=1, batch_size=5, synthetic_batch=8)
    annot = NeuralAnnot(model, net, {"depth", "pretrain"}, load_pose_set(bundled_pose_set()), None, cfg,
                        checkpoint=out / "annotator.pt")
    records, problems = read_coco(sample_dir / "test_coco.json", sample_dir)
    target = neuralannot_target(records, model)
    target = target.index(torch.arange(len(target) - 1))  # 11 people
    run_neuralannot([(sample_dir, records, problems)], annot, target, model, out / "fits", progress=False,
                    shard=(dist.rank, dist.world))
    torch.save(dict(rank=dist.rank, world=dist.world, log=annot.log, initial=initial,
                    pretrained={k: v.clone() for k, v in annot.pretrained.state_dict().items()},
                    state={k: v.clone() for k, v in annot.net.state_dict().items()}), out / f"rank{dist.rank}.pt")
    finish()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
