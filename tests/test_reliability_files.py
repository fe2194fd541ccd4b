"""Nothing lost: exports never delete what we did not write, files are replaced atomically, a full disk
or a torn line damages nothing, the weights fingerprint sees every value, one pipeline per run folder."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas.errors import OutputFolderError, OutputWriteError
from nas.evaluation.results import ResultsCache, TaskResult, weights_fingerprint
from nas.export.standalone import export_sub_network
from nas.io.atomic import CorruptFileError, write_json
from nas.io.folders import MANIFEST_FILE
from nas.io.locks import RunDirLock, RunDirLockedError
from nas.quantization.quantize import quantize_sub_network, save_quantized
from nas.stages.export import run_export
from nas.supernet.subnetwork import SubNetwork

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
SUB = SubNetwork((0, 2), (64, 128), (4, 2), 64)


def user_folder(path: Path) -> Path:
    """A folder with a user's own files, to be left alone."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("my thesis")
    (path / "notes" / "ideas.md").write_text("ideas")
    return path


def assert_untouched(path: Path) -> None:
    assert (path / "thesis.tex").read_text() == "my thesis"
    assert (path / "notes" / "ideas.md").read_text() == "ideas"


def compose_export(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("export", overrides=["model=tiny_llama", *overrides])


def refuse_model_loading(monkeypatch) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("nas.stages.export.instantiate", no_model)


# --- exports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_export_into_a_folder_of_user_files_is_refused_before_the_model_loads(tmp_path, monkeypatch, overwrite):
    folder = user_folder(tmp_path / "mine")
    refuse_model_loading(monkeypatch)
    cfg = compose_export(f"out_dir={folder}", f"overwrite={str(overwrite).lower()}")
    with pytest.raises(OutputFolderError, match="did not write; they are never deleted"):
        run_export(cfg, tmp_path / "run")
    assert_untouched(folder)


def test_export_into_the_current_folder_is_refused(tmp_path, monkeypatch):
    folder = user_folder(tmp_path / "cwd")
    monkeypatch.chdir(folder)
    refuse_model_loading(monkeypatch)
    with pytest.raises(OutputFolderError, match="out_dir=. "):
        run_export(compose_export("out_dir=."), tmp_path / "run")
    assert_untouched(folder)


def test_the_command_line_refuses_and_keeps_the_files(tmp_path):
    folder = user_folder(tmp_path / "mine")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.export",
            "model=tiny_llama",
            f"out_dir={folder}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "did not write" in proc.stderr and "another (empty or new) out_dir" in proc.stderr
    assert_untouched(folder)


def test_an_earlier_export_is_replaced_only_with_overwrite(tiny, tmp_path):
    model, tokenizer = tiny
    out = tmp_path / "export"
    export_sub_network(model, SUB, out, tokenizer)
    assert json.loads((out / MANIFEST_FILE).read_text())["files"]  # the folder lists what it wrote
    with pytest.raises(OutputFolderError, match="overwrite=true"):
        export_sub_network(model, SUB.validate(model.shape), out)
    smaller = SubNetwork((0,), (64,), (2,), 64)
    export_sub_network(model, smaller, out, overwrite=True)
    assert SubNetwork.load(out) == smaller
    assert not (out / "tokenizer.json").exists()  # the whole folder was replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary sibling left


def test_a_file_added_to_an_export_makes_it_foreign(tiny, tmp_path):
    model, _ = tiny
    out = export_sub_network(model, SUB, tmp_path / "export")
    (out / "my_results.csv").write_text("keep me")
    with pytest.raises(OutputFolderError, match="did not write"):
        export_sub_network(model, SUB, out, overwrite=True)
    assert (out / "my_results.csv").read_text() == "keep me"


def test_a_failed_export_leaves_the_earlier_one_intact(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    out = export_sub_network(model, SUB, tmp_path / "export", tokenizer)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("nas.export.standalone.save_file", disk_full)
    with pytest.raises(OutputWriteError, match="No space left to write"):
        export_sub_network(model, SubNetwork((0,), (64,), (2,), 64), out, tokenizer, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_an_export_killed_while_writing_leaves_no_half_folder(tmp_path):
    from killpoints import run_killed, was_killed

    out = tmp_path / "export"
    script = f"""
        from nas import load_model, export_sub_network
        from nas.supernet.subnetwork import SubNetwork
        model, tok = load_model("tiny_llama")
        export_sub_network(model, SubNetwork((0,), (64,), (2,), 64), {str(out)!r}, tok)
    """
    proc = run_killed(script, at="safetensors.torch:save_file")  # after the config, before the weights
    assert was_killed(proc), proc.stderr[-2000:]
    assert not out.exists()
    # The next export into the same place tidies the dead one's temporary folder and succeeds.
    from nas import load_model

    model, _ = load_model("tiny_llama")
    export_sub_network(model, SubNetwork((0,), (64,), (2,), 64), out)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_read_only_parent_is_refused_before_the_model_loads(monkeypatch):
    # As root, permission bits do not stop writes: drop to an unprivileged effective user for the check.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"nas-ro-{os.getpid()}"
    parent = base / "ro"
    parent.mkdir(parents=True)
    try:
        os.chmod(base, 0o755)
        os.chmod(parent, 0o555)
        refuse_model_loading(monkeypatch)
        cfg = compose_export(f"out_dir={parent / 'export'}")
        root = os.geteuid() == 0
        if root:
            os.setegid(65534)
            os.seteuid(65534)
        try:
            with pytest.raises(OutputWriteError, match="is not writable"):
                run_export(cfg, parent / "run")
        finally:
            if root:
                os.seteuid(0)
                os.setegid(0)
        assert not (parent / "export").exists()
    finally:
        os.chmod(parent, 0o755)
        import shutil

        shutil.rmtree(base)


def test_save_quantized_never_replaces_foreign_files(tiny, tmp_path):
    model, tokenizer = tiny
    q = quantize_sub_network(model, SUB, tokenizer, "int8", tmp_path / "fp")
    folder = user_folder(tmp_path / "mine")
    with pytest.raises(OutputFolderError):
        save_quantized(q, folder, overwrite=True)
    assert_untouched(folder)
    saved = save_quantized(q, tmp_path / "q")
    assert SubNetwork.load(saved) == SUB  # its subnetwork.json is a sub-network file too


# --- atomic files --------------------------------------------------------------------------------


def test_a_failed_json_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_json({"version": 1}, tmp_path / "stage.json")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputWriteError, match=r"No space left to write .*stage\.json .*free"):
        write_json({"version": 2}, path)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]  # no temporary file left


def test_a_damaged_stage_record_is_one_clear_message(tmp_path):
    from nas.stages.pipeline import StageRecord

    record = StageRecord(tmp_path / "search", {"a": 1})
    record.save({"done": True}, 1.0)
    record.path.write_text(record.path.read_text()[:20])  # as a kill mid-write used to leave it
    with pytest.raises(CorruptFileError, match=r"stage record .* is damaged .* delete .*search to redo"):
        record.finished()


# --- the evaluation cache ------------------------------------------------------------------------


def result(score: float) -> TaskResult:
    return TaskResult("arc_easy", "acc", score, {"acc": score}, 4)


def test_the_results_cache_loads_silently_and_survives_a_torn_line(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    cache = ResultsCache(path)
    cache.put("a", result(0.25))
    cache.put("b", result(0.5))
    with caplog.at_level(logging.WARNING):
        assert len(ResultsCache(path)) == 2
    assert not caplog.records  # a well-formed file loads without a word

    with path.open("a") as f:
        f.write('{"key": "c", "result": {"task": "arc')  # a kill in the middle of a write
    with caplog.at_level(logging.WARNING):
        reopened = ResultsCache(path)
    assert len(reopened) == 2 and "cut short" in caplog.text
    reopened.put("d", result(0.75))  # lands on a line of its own, not glued to the torn one
    again = ResultsCache(path)
    assert again.get("d") is not None and again.get("d").score == 0.75 and len(again) == 3


# --- the weights fingerprint ---------------------------------------------------------------------


def test_the_fingerprint_sees_one_changed_value_anywhere():
    from nas import load_model

    model, _ = load_model("tiny_llama")
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    weight = model.model.layers[1].mlp.up_proj.weight
    with torch.no_grad():
        weight[3, 5] = float("nan")  # not on any strided sample position of the old fingerprint
    assert weights_fingerprint(model) != before
    fresh, _ = load_model("tiny_llama")
    assert weights_fingerprint(fresh) == before  # same weights, same fingerprint


def test_the_fingerprint_sees_weights_rewritten_in_place_on_disk(tmp_path):
    from safetensors.torch import load_file, save_file

    from nas import load_model

    model, tokenizer = load_model("tiny_llama")
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, _ = load_model(str(tmp_path / "m"))
    before = weights_fingerprint(loaded)
    weights = load_file(tmp_path / "m" / "model.safetensors")
    weights["model.layers.0.mlp.down_proj.weight"][1, 2] += 1.0
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    reloaded, _ = load_model(str(tmp_path / "m"))
    assert weights_fingerprint(reloaded) != before


# --- one job per run directory -------------------------------------------------------------------


def test_a_second_pipeline_on_the_same_run_directory_is_refused(tmp_path):
    from test_pipeline import compose_pipeline, tiny_pipeline

    from nas.stages.pipeline import run_pipeline

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from nas.io.locks import RunDirLock
                with RunDirLock({str(tmp_path / "run")!r}, "pipeline"):
                    print("holding", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunDirLockedError, match=rf"in use by a pipeline job \(pid {holder.pid} on "):
            run_pipeline(compose_pipeline(tiny_pipeline(tmp_path)), tmp_path / "run")
        assert not (tmp_path / "run" / "search").exists()  # it did no work
    finally:
        holder.communicate("done\n", timeout=60)
    with RunDirLock(tmp_path / "run", "pipeline"):  # released when its holder ended
        pass


# --- sub-network files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"layers": [0.9, 1.7], "mlp_sizes": [64, 64], "num_heads": [2, 2], "hidden_size": 64},
        {"layers": [0, 1], "mlp_sizes": [64, 64], "num_heads": [2, 2], "hidden_size": True},
        {"layers": [0, 1], "mlp_sizes": [64.0, 64], "num_heads": [2, 2], "hidden_size": 64},
        {"layers": "01", "mlp_sizes": [64, 64], "num_heads": [2, 2], "hidden_size": 64},
    ],
    ids=["float-layers", "bool-hidden", "float-mlp", "text-layers"],
)
def test_sub_networks_with_non_integers_are_refused(tmp_path, monkeypatch, data):
    from nas.errors import InvalidSubNetworkError

    with pytest.raises(InvalidSubNetworkError, match="lists of integers"):
        SubNetwork.from_dict(data)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    refuse_model_loading(monkeypatch)
    with pytest.raises(InvalidSubNetworkError, match="lists of integers"):
        run_export(compose_export(f"subnet={path}", f"out_dir={tmp_path / 'out'}"), tmp_path / "run")


def test_numpy_integers_are_whole_numbers():
    import numpy as np

    sub = SubNetwork(np.array([0, 1]), [np.int64(64)] * 2, (2, 2), np.int32(64))
    assert sub == SubNetwork((0, 1), (64, 64), (2, 2), 64) and isinstance(sub.hidden_size, int)
