"""Run directories (:mod:`vaedft.runs`): a checkpoint that is not plain tensors and numbers, or
is damaged, is refused with a one-line :class:`CheckpointError` that names the file; nothing in
it ever runs.  ``vaedft minimize`` and ``vaedft train-*`` (resume) say so in one line too.
"""

from __future__ import annotations

import pytest
import torch

from vaedft.cli import main
from vaedft.models import functional_preset
from vaedft.runs import CheckpointError, load_checkpoint, load_run
from vaedft.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

RAN = []


def _side_effect(msg):
    RAN.append(msg)
    return msg


class Payload:
    """What an attacker's checkpoint holds: unpickling it calls ``_side_effect``."""

    def __reduce__(self):
        return (_side_effect, ("code ran",))


@pytest.fixture(scope="module")
def runs(tiny_pair):
    return tiny_pair


def _poison(path):
    good = torch.load(path, weights_only=True)
    torch.save({**good, "model": Payload()}, path)


@pytest.mark.parametrize("damage", ["pickle", "truncated", "empty", "not_a_dict", "missing"])
def test_bad_checkpoint_is_refused_in_one_line(runs, tmp_path, damage):
    path = tmp_path / "best.pt"
    torch.save(torch.load(runs["functional"] / "best.pt", weights_only=True), path)
    if damage == "pickle":
        _poison(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert "weights_only=False" not in msg
    assert RAN == []


def test_load_checkpoint_reads_a_good_one(runs):
    ckpt = load_checkpoint(runs["functional"] / "best.pt")
    assert set(ckpt) >= {"model", "epoch"}
    model, _ = load_run(runs["functional"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])


def test_vaedft_minimize_refuses_a_pickle_in_one_line(runs, tmp_path, capsys):
    bad = tmp_path / "functional"
    bad.mkdir()
    for name in ("config.json", "best.pt"):
        (bad / name).write_bytes((runs["functional"] / name).read_bytes())
    _poison(bad / "best.pt")
    code = main(["minimize", "--vae", str(runs["vae"]), "--functional", str(bad), "--data", str(runs["test"]),
                 "--train-data", str(runs["data"]), "--out", str(tmp_path / "r.h5"), "--steps", "2",
                 "--no-progress", "--no-gap"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(bad / "best.pt") in err and "weights_only=False" not in err and "Traceback" not in err
    assert RAN == []


def test_resume_from_a_poisoned_last_pt_is_refused(runs, tmp_path):
    out = tmp_path / "f"
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=40)
    model = functional_preset("gaussian1d").replace(channels=(4,) * 5, kernel=3)
    train("functional", runs["data"], out, model_config=model, config=cfg, device="cpu", progress=False,
          max_epochs_this_call=1)
    _poison(out / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt"):
        train("functional", runs["data"], out, model_config=model, config=cfg, device="cpu", progress=False)
    assert RAN == []
