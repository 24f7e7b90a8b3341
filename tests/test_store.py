import json

from distill.records import write_json
from distill.store import RunStore, fingerprint


def test_fingerprint_is_canonical_and_sensitive():
    same = fingerprint("s", {"b": [1, 2], "a": 1}, {})
    assert fingerprint("s", {"a": 1, "b": [1, 2]}, {}) == same
    assert fingerprint("s", {"a": 1}, {}) != fingerprint("s", {"a": 2}, {})
    assert fingerprint("s", {"a": 1}, {"x": "f1"}) != fingerprint("s", {"a": 1}, {"x": "f2"})
    assert fingerprint("s", {"a": 1}, {}) != fingerprint("t", {"a": 1}, {})


def test_commit_writes_manifest_last_and_marks_done(tmp_path):
    store = RunStore(tmp_path / "run")
    stage = store.stage("round_0", "filter", {"k": 1}, {"generate": "abc"})
    assert not stage.is_done()
    work = stage.begin()
    (work / "kept.jsonl").write_text("{}\n")
    assert not stage.path.exists()  # nothing visible until the commit
    manifest = stage.commit({"counts": {"kept": 1}})
    assert stage.is_done()
    assert not work.exists()
    on_disk = json.loads((stage.path / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["fingerprint"] == stage.fingerprint
    assert json.loads((stage.path / "config.json").read_text()) == {"k": 1}
    assert [m["stage"] for m in store.manifests()] == ["filter"]


def test_changed_config_is_not_done_and_old_output_is_moved_aside(tmp_path):
    store = RunStore(tmp_path / "run")
    old = store.stage("round_0", "filter", {"k": 1}, {})
    old.begin()
    old.commit({})
    new = store.stage("round_0", "filter", {"k": 2}, {})
    assert not new.is_done()
    new.begin()
    stale = list((tmp_path / "run" / "round_0" / ".stale").iterdir())
    assert len(stale) == 1 and (stale[0] / "manifest.json").exists()


def test_begin_keeps_checkpoints_of_same_fingerprint_only(tmp_path):
    store = RunStore(tmp_path / "run")
    stage = store.stage("round_0", "generate", {"k": 1}, {})
    work = stage.begin()
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "chunk-00000.jsonl").write_text("x\n")
    # a crash here; the same stage begins again and finds its checkpoint
    again = store.stage("round_0", "generate", {"k": 1}, {})
    assert (again.begin() / "checkpoints" / "chunk-00000.jsonl").exists()
    # another config must not reuse those checkpoints
    other = store.stage("round_0", "generate", {"k": 2}, {})
    assert not (other.begin() / "checkpoints").exists()


def test_speed_only_settings_stay_out_of_stage_fingerprints(tmp_path):
    from distill.component import fingerprint_inputs
    from distill.filters.near_dedup import EmbeddingConfig
    from distill.filters.perplexity import Config as PerplexityConfig
    from distill.flywheel.measure import MeasureConfig
    from distill.models import ModelRef
    from distill.recipe import recipe_model
    from distill.runner import Runner, RunOptions

    def filter_fingerprint(settings):
        # what a filter adds to the filter stage's fingerprint (Runner._component)
        return fingerprint_inputs(settings, lambda spec: "identity", {})

    def measure_fingerprint(settings):
        # the config the runner's measure stage is fingerprinted with
        recipe = recipe_model().model_validate({
            "name": "run", "output_dir": str(tmp_path), "teacher": {"model": "org/teacher"},
            "student": {"model": "org/student"}, "eval": {"tasks": ["microworld"]},
            "generate": {"kind": "self_instruct", "num_instructions": 1},
            "measure": settings.model_dump()})
        runner = Runner(recipe, RunOptions())
        seen = []
        runner._stage = lambda label, name, config, inputs, work: seen.append(config)
        model = ModelRef(path="m", identity={"fingerprint": "m"})
        runner.measure("round_0", 0, {}, model, model, None)
        return seen[0]

    for make, fingerprinted in (
            (lambda **kw: PerplexityConfig(model="org/m", **kw), filter_fingerprint),
            (EmbeddingConfig, filter_fingerprint), (MeasureConfig, measure_fingerprint)):
        assert fingerprinted(make(batch_size=2)) == fingerprinted(make(batch_size=64))
        assert "batch_size" in make(batch_size=2).model_dump()  # still in the resolved recipe
    assert filter_fingerprint(PerplexityConfig(model="org/m", max_length=8)) != \
        filter_fingerprint(PerplexityConfig(model="org/m", max_length=16))
    assert measure_fingerprint(MeasureConfig(max_length=8)) != \
        measure_fingerprint(MeasureConfig(max_length=16))


def test_a_commit_with_failed_requests_is_redone_from_its_own_checkpoints(tmp_path):
    store = RunStore(tmp_path / "run")
    stage = store.stage("round_0", "generate", {"k": 1}, {})
    work = stage.begin()
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "chunk-00000.jsonl").write_text("answers\n")
    stage.commit({"failed_requests": 2})
    assert stage.manifest() is not None and not stage.is_done()
    assert stage.failed_requests() == 2

    again = store.stage("round_0", "generate", {"k": 1}, {})
    work = again.begin()  # the commit becomes the work directory: its answers are kept
    assert (work / "checkpoints" / "chunk-00000.jsonl").read_text() == "answers\n"
    assert not again.path.exists() and not (work / "manifest.json").exists()
    assert not (tmp_path / "run" / "round_0" / ".stale").exists()
    again.commit({"failed_requests": 0})
    assert store.stage("round_0", "generate", {"k": 1}, {}).is_done()
    # a complete commit is never reopened
    assert store.stage("round_0", "generate", {"k": 1}, {}).failed_requests() == 0


def test_a_kill_inside_commit_keeps_the_finished_work(tmp_path):
    # killed after the manifest was written, before the rename: the work is finished work
    store = RunStore(tmp_path / "run")
    stage = store.stage("round_0", "generate", {"k": 1}, {})
    work = stage.begin()
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "chunk-00000.jsonl").write_text("answers\n")
    (work / "fingerprint").unlink()  # what commit does first
    write_json(work / "manifest.json", {"fingerprint": stage.fingerprint})
    again = store.stage("round_0", "generate", {"k": 1}, {})
    assert (again.begin() / "checkpoints" / "chunk-00000.jsonl").read_text() == "answers\n"
    # a manifest of another config is no claim on the directory
    other = store.stage("round_0", "generate", {"k": 2}, {})
    (other.work / "fingerprint").unlink()
    assert not (other.begin() / "checkpoints").exists()


def test_a_resumed_stage_drops_the_half_writes_of_a_killed_run(tmp_path):
    store = RunStore(tmp_path / "run")
    work = store.stage("round_0", "generate", {"k": 1}, {}).begin()
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "chunk-00000.jsonl").write_text("answers\n")
    (work / "checkpoints" / ".chunk-00001.jsonl.a1b2c3d4.tmp").write_text("half an ans")
    again = store.stage("round_0", "generate", {"k": 1}, {}).begin()
    assert sorted(p.name for p in (again / "checkpoints").iterdir()) == ["chunk-00000.jsonl"]
