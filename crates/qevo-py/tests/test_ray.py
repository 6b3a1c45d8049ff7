"""RayExecutor on a local Ray head with two workers: the local run's front, a killed
actor replaced, a worker on another model refused, an address that does not answer."""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import qevo

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_two_workers_give_the_local_front_bytes(local_ray, model, small, tmp_path):
    qevo.search(model, seed=3, **small).save(tmp_path / "local")
    ex = qevo.RayExecutor(workers=2)
    qevo.search(model, seed=3, executor=ex, **small).save(tmp_path / "ray")
    assert ex.jobs_scored > 0
    for f in ("front.json", "history.jsonl", "plan.json"):
        assert (tmp_path / "local" / f).read_bytes() == (tmp_path / "ray" / f).read_bytes(), f


def test_an_actor_killed_mid_batch_is_replaced_and_nothing_is_lost(local_ray, model, small, tmp_path):
    killed = []

    def kill_one(actors):
        if not killed:  # the first batch's first actor, right after its chunk was sent
            ray.kill(actors[0])
            killed.append(True)

    qevo.search(model, seed=4, **small).save(tmp_path / "local")
    ex = qevo.RayExecutor(workers=2, after_submit=kill_one)
    qevo.search(model, seed=4, executor=ex, **small).save(tmp_path / "ray")
    assert killed and ex.replaced == 1
    assert (tmp_path / "local" / "front.json").read_bytes() == (tmp_path / "ray" / "front.json").read_bytes()


def test_a_worker_with_another_model_is_refused(local_ray, model, small, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model.source, other)
    nudge_one_weight(other / "model.safetensors", "model.layers.0.self_attn.q_proj.weight")
    ex = qevo.RayExecutor(workers=2, model_path=str(other))
    with pytest.raises(qevo.QevoError, match="model fingerprint .* differs .* refused"):
        qevo.search(model, executor=ex, **small)


def nudge_one_weight(path, tensor):
    """Flips the lowest bit of the middle element of `tensor` in a safetensors file."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    start, end = header[tensor]["data_offsets"]
    width = {"F32": 4, "F16": 2, "BF16": 2}[header[tensor]["dtype"]]
    at = 8 + n + start + ((end - start) // 2 // width) * width
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_an_address_that_does_not_answer_fails_within_30_s():
    # A fresh process: Ray must not be initialised yet for the address to matter.
    script = textwrap.dedent(
        """
        import time, qevo
        t = time.perf_counter()
        try:
            qevo.search(qevo.load(), generations=1, population=4, seq_len=32, calib_windows=1,
                        screen_windows=1, heldout_windows=1, baselines=False, formats="q8_0",
                        executor=qevo.RayExecutor(address="ray://127.0.0.1:9", workers=1))
        except qevo.QevoError as e:
            print("error after %.1f s: %s" % (time.perf_counter() - t, e))
        """
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert "error after" in out, out
    assert "127.0.0.1:9" in out
    assert time.perf_counter() - start < 45
