"""Each benchmark script runs end to end at a tiny size and writes its JSON with the expected fields (no speeds
are asserted: ARCHITECTURE.md section 8)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def run_script(name: str, *args: str, tables: tuple[str, ...] = ("| peer", "| profile")) -> None:
    """Run a benchmark script (no time limit: a test has none) and check that it printed one of its tables."""
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert any(t in proc.stdout for t in tables)  # the markdown table was printed


def test_envs_quick(tmp_path):
    pytest.importorskip("minigrid")  # the bench extra (make bench installs it)
    out = tmp_path / "envs.json"
    run_script("envs.py", "--quick", "--out", str(out))
    result = json.loads(out.read_text())
    assert {"machine", "versions", "batches", "envs", "repeats"} <= set(result)
    rows = result["envs"]["Empty-8x8"]["rows"]
    peers = {r["peer"] for r in rows}
    assert {"MiniGrid, one env", "MiniGrid, SyncVectorEnv(16)", "ours (jaxlib_kernels.envs)", "navix direct"} <= peers
    for row in rows:
        assert row["steps_per_s"] > 0 and len(row["times_s"]) == result["repeats"]
        assert {"compile_s", "median_s", "memory_bytes", "batch"} <= set(row)
    ratios = result["envs"]["Empty-8x8"]["ratios"]
    assert set(ratios) == {str(b) for b in result["batches"]}
    assert {"ours_over_minigrid_single", "ours_over_navix_direct"} <= set(ratios["1"])


def test_ppo_quick(tmp_path):
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("minigrid")
    out = tmp_path / "ppo.json"
    run_script("ppo.py", "--quick", "--no-cartpole", "--devices", "2", "--out", str(out))  # --quick: 1 and 2 seeds
    result = json.loads(out.read_text())
    assert {"machine", "versions", "rows", "summary", "settings", "devices"} <= set(result)
    assert len(result["devices"]) == 2  # --devices reached XLA before JAX started
    split = "ours (jaxlib_kernels.ppo), seeds over 2 devices"
    peers = {(r["peer"], r["seeds"]) for r in result["rows"]}
    assert {("ours, one device", 1), ("purejaxrl-style", 1), ("Stable-Baselines3 (MiniGrid, torch CPU)", 1),
            ("ours, one device", 2), (split, 2), ("purejaxrl-style", 2)} <= peers
    assert (split, 1) not in peers  # one seed cannot be split: no duplicate row
    assert ("Stable-Baselines3, 2 processes at once", 2) in peers  # SB3 on the whole machine as well
    for row in result["rows"]:
        assert row["env_steps_per_s"] > 0 and "final_return_mean" in row and "compile_s" in row
    # the same seeds learn the same thing whether or not they are split over devices
    by_peer = {r["peer"]: r for r in result["rows"] if r["seeds"] == 2}
    assert by_peer[split]["final_return_per_seed"] == pytest.approx(by_peer["ours, one device"]["final_return_per_seed"])
    assert by_peer[split]["devices"] == 2
    for key in ("Navix-Empty-5x5-v0/1", "Navix-Empty-5x5-v0/2"):
        assert {"ours_over_purejaxrl", "ours_one_device_over_purejaxrl", "ours_over_sb3", "ours_return",
                "purejaxrl_return", "sb3_return", "ours_devices"} <= set(result["summary"][key])
    assert result["summary"]["Navix-Empty-5x5-v0/2"]["ours_devices"] == 2
    assert result["summary"]["Navix-Empty-5x5-v0/2"]["ours_over_sb3_all_cores"] > 0


@pytest.mark.bench_script
def test_ppo_profile_quick(tmp_path):
    out = tmp_path / "ppo_profile.json"
    run_script("ppo_profile.py", "--quick", "--out", str(out))
    result = json.loads(out.read_text())
    assert {r["update_epochs"] for r in result["breakdown"]["rows"]} == {1, 4}  # --quick: two points of the line
    fit = result["breakdown"]["fit"]
    assert fit["epoch_s"] > 0 and 0 < fit["update_share_at_4_epochs"] < 1.5
    rows = result["flags"]["baseline"]["rows"]  # the variant ran in its own interpreter and returned figures
    assert [r["seeds"] for r in rows] == [1, 2] and all(r["env_steps_per_s"] > 0 for r in rows)
    split = result["split"]
    assert split["local_devices"] == result["cores"]
    assert split["rows"][0]["devices"] == min(2, result["cores"])


def test_pipeline_analyses_a_run_folder(tmp_path):
    """The pipeline script's analysis on a run folder laid out as a real run leaves it (a whole run takes minutes)."""
    run = tmp_path / "runs" / "r1"
    units = run / "units"
    units.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "r1", "status": "done", "wall_seconds": 50.0, "timings": {
        "ideation+novelty": 5.0, "implementation": 5.0, "experiments": 30.0, "analysis+writeup+review": 8.0}}))
    ledger = []
    for i, (end, seconds) in enumerate([(110.0, 10.0), (115.0, 10.0), (130.0, 5.0)]):
        (units / f"k{i}.json").write_text(json.dumps({"seconds": seconds, "pid": 7 + i % 2}))
        ledger.append(json.dumps({"key": f"k{i}", "method": "m", "setting": "s", "time": end, "pid": 7 + i % 2}))
    (units / "ledger.jsonl").write_text("\n".join(ledger) + "\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "abc-cache").write_text("x")
    (cache / "abc-atime").write_text("x")
    out = tmp_path / "pipeline.json"
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.run([sys.executable, str(BENCH / "pipeline.py"), "--analyse", str(run), str(cache),
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads(out.read_text())["runs"][0]
    # units cover [100, 115] and [125, 130]: 20 s of kernels in a 30 s experiments stage; 2 s outside the stages
    assert entry["kernel_busy_s"] == pytest.approx(20.0)
    assert entry["overhead_ray_in_experiments_s"] == pytest.approx(10.0)
    assert entry["overhead_outside_stages_s"] == pytest.approx(2.0)
    assert entry["overhead_share"] == pytest.approx(12.0 / 50.0)
    assert entry["cache_entries_after"] == 1 and entry["workers"] == 2


@pytest.mark.bench_script
def test_bbo_quick(tmp_path):
    out = tmp_path / "bbo.json"
    run_script("bbo.py", "--quick", "--out", str(out))
    result = json.loads(out.read_text())
    assert {"machine", "versions", "rows", "summary", "evotf", "strategies", "seeds", "generations"} <= set(result)
    peers = {(r["function"], r["strategy"], r["peer"]) for r in result["rows"]}
    ours, peer = "ours (bbo kernel, one compiled call)", "evosax loop (jit ask/tell, one seed at a time)"
    for name in ("Open_ES", "SNES", "Sep_CMA_ES", "CMA_ES"):
        assert {("sphere", name, ours), ("sphere", name, peer)} <= peers
        assert result["summary"][f"sphere/{name}"]["ours_over_peer"] > 0
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["generations_per_s"] > 0 and row["compile_s"] >= 0
        assert isinstance(row["final_log10_regret_mean"], float)
        assert len(row["final_log10_regret_per_seed"]) == result["seeds"] == row["seeds"]
    tf = result["evotf"]
    assert {"rows", "summary", "model", "population", "dim", "generations"} <= set(tf)
    tf_rows = {r["peer"]: r for r in tf["rows"]}
    tf_ours = "ours: evotf.trained() in the bbo kernel"
    tf_peer = "evosax EvoTF_ES (2024_03_SNES_small.pkl), evosax loop"
    assert {tf_ours, tf_peer} <= set(tf_rows)
    for row in tf_rows.values():  # EvoTF_ES may report an error with its reason instead of figures
        assert "error" in row or (row["generations_per_s"] > 0 and isinstance(row["final_log10_regret_mean"], float))
    assert tf_rows[tf_ours]["generations_per_s"] > 0
    assert "ours_over_evosax_evotf" in tf["summary"] and tf["summary"]["target"] == 10.0


@pytest.mark.bench_script
def test_bbo_ead_quick(tmp_path):
    out = tmp_path / "bbo_ead.json"
    run_script("bbo_ead.py", "--quick", "--self-ref", "--evosax-ckpt", "--out", str(out))
    result = json.loads(out.read_text())
    assert {"ead_config", "training", "evaluation", "self_referential", "machine", "versions"} <= set(result)
    training = result["training"]
    assert len(training["loss"]) == training["steps"] > 0 and isinstance(training["loss_last"], float)
    evaluation = result["evaluation"]
    seeds = evaluation["seeds"]
    assert len(seeds) >= 2 and not set(seeds) & set(range(result["ead_config"]["seeds"]))  # not the teachers' seeds
    assert "normal" in evaluation["interval"] and set(evaluation["settings"]) == {"heldout_pair_d10", "sphere_d5"}
    for name, setting in evaluation["settings"].items():
        assert setting["held_out"]["by"], name  # held-out functions or a dimension never used in training
        assert {"evotf_ead", "snes", "random_search", "evosax_EvoTF_ES"} <= set(setting["methods"])
        for method, row in setting["methods"].items():
            if method == "evosax_EvoTF_ES" and "error" in row:
                continue  # the shipped checkpoint may report why it cannot run instead of figures
            assert len(row["final_per_seed"]) == row["n"] == len(seeds), (name, method)
            assert {"mean", "ci95", "ci95_t"} <= set(row)
        assert {"mean", "ci95_t", "p_paired_t", "better_seeds"} <= set(setting["differences"]["evotf_ead - snes"])
    self_ref = result["self_referential"]
    assert len(self_ref["per_round"]) == self_ref["rounds"] + 1 == len(self_ref["train_curve"])
    assert isinstance(self_ref["per_round"][0]["teacher_log_regret"], float)
    for entry in self_ref["per_round"]:
        assert len(entry["settings"]["sphere_d5"]["final_per_seed"]) == len(seeds)


def test_dpo_quick(tmp_path):
    pytest.importorskip("trl")  # the bench extra (make bench installs it)
    out = tmp_path / "dpo.json"
    run_script("dpo.py", "--quick", "--devices", "2", "--out", str(out))  # --quick: 1 and 2 seeds
    result = json.loads(out.read_text())
    assert {"machine", "versions", "rows", "summary", "sizes", "conversion", "devices", "repeats", "trl_repeats"} <= set(
        result)
    assert len(result["devices"]) == 2 and result["versions"]["trl"]
    assert result["conversion"]["sft_max_abs_logit_diff"] <= result["conversion"]["logit_tol"]
    rows = {(r["peer"], r["seeds"]): r for r in result["rows"]}
    ours, split = "ours (dpo kernel), one device", "ours (dpo kernel), seeds over 2 devices"
    trl_one = [r for r in result["rows"] if r["peer"].startswith("TRL DPOTrainer (torch CPU), one process")]
    assert {(ours, 1), (ours, 2), (split, 2), ("TRL DPOTrainer, 2 processes at once", 2)} <= set(rows)
    assert len(trl_one) == 2 and {r["torch_threads"] for r in trl_one} >= {1}  # torch's default threads, and one
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["pairs_per_s"] > 0 and row["compile_s"] >= 0 and len(row["times_s"]) >= 1
        assert math.isfinite(row["reward_mean"]) and math.isfinite(row["kl_mean"])
        assert len(row["reward_per_seed"]) == len(row["kl_per_seed"]) == row["seeds"]
    # the same model, pairs, batches and optimiser: TRL's seed 0 ends where ours does, measured the same way
    for row in trl_one:
        assert row["max_abs_weight_diff_vs_ours_same_seed"] < 1e-3
        assert row["back_conversion_max_abs_logit_diff"] <= result["conversion"]["logit_tol"]
        assert row["reward_per_seed"][0] == pytest.approx(rows[(ours, 1)]["reward_per_seed"][0], abs=0.05)
    for seeds in result["sizes"]["seeds"]:
        entry = result["summary"][f"seeds_{seeds}"]
        assert entry["ours_over_trl"] > 0 and entry["ours_over_trl_all_processes"] > 0
    assert result["summary"]["target"] == 10.0


@pytest.mark.bench_script
def test_headroom_quick(tmp_path):
    out = tmp_path / "headroom.json"
    run_script("headroom.py", "--quick", "--envs", "Navix-Empty-5x5-v0", "--out", str(out),
               tables=("| env | budget | PPO clip",))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["optimum"] == pytest.approx(1 - 0.9 * 5 / 100)  # Empty-5x5: 5 steps from the fixed start
    assert len(row["ppo_clip"]) == len(row["dpo"]) == 2 and 0 <= row["ppo_clip_mean"] <= row["optimum"] + 1e-6


@pytest.mark.bench_script
def test_dpo_settings_quick(tmp_path):
    out = tmp_path / "dpo_settings.json"
    run_script("dpo_settings.py", "--quick", "--out", str(out), tables=("| setting | steps | loss",))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["setting"] == "unigram" and row["budget"] == 8 and row["seeds"] == 2 and row["ceiling"] == 1.0
    assert len(row["betas"]) == 4 and 0 < row["sft_reward"] < 1
    for b in row["betas"]:
        assert 0 <= b["reward"] <= 1 and b["kl"] >= 0 and len(b["reward_per_seed"]) == 2
        assert b["headroom_used"] == pytest.approx((b["reward"] - row["sft_reward"]) / (1 - row["sft_reward"]))


@pytest.mark.bench_script
def test_bbo_hparams_quick(tmp_path):
    sys.path.insert(0, str(BENCH))
    import ppo_hparams as hparams

    out = tmp_path / "bbo_hparams.json"
    run_script("bbo_hparams.py", "--quick", "--out", str(out), tables=("| optimiser",))
    result = json.loads(out.read_text())
    assert {"machine", "versions", "runs", "summary", "reference", "space", "notes", "ppo_config"} <= set(result)
    assert set(result["runs"]) == {"evotf_ead", "random_search", "snes"}  # no --model: EvoLLM skipped, said so
    assert "EvoLLM skipped" in result["notes"]["evollm_skipped"]
    space = hparams.space(tuple(result["space"][2][k] for k in ("low", "high")))
    first = {name: runs[0]["curve_return"][0] for name, runs in result["runs"].items()}
    assert len(set(first.values())) == 1  # the same seed: every optimiser starts from the same generation
    for name, runs in result["runs"].items():
        assert len(runs) == result["search_seeds"]
        for run in runs:
            assert len(run["curve_return"]) == result["generations"]
            assert all(b >= a for a, b in zip(run["curve_return"], run["curve_return"][1:], strict=False))
            assert space.valid(run["best_config"]) and math.isfinite(run["heldout_return"])
        assert math.isfinite(result["summary"][name]["best_return_mean"])
    assert result["unique_trainings"] <= result["fitness_calls"]
    assert "| optimiser" in out.with_suffix(".md").read_text()


@pytest.mark.bench_script
def test_tree_stage_quick(tmp_path):
    out = tmp_path / "tree_stage.json"
    run_script("tree_stage.py", "--quick", "--fresh", "1", "--out", str(out), tables=("| path",))
    result = json.loads(out.read_text())
    assert {"machine", "versions", "config", "paths", "nodes", "final", "errors"} <= set(result)
    paths = result["paths"]
    assert {"population", "per_node_one_process", "per_node_fresh_process"} <= set(paths)
    assert paths["population"]["nodes"] == paths["per_node_one_process"]["nodes"] == 4
    assert paths["per_node_fresh_process"]["nodes"] == 1
    for row in paths.values():
        assert row["cpu_s"] > 0 and row["nodes_per_cpu_minute"] > 0 and row["speedup_of_population"] > 0
    assert result["errors"] == [None] * 4 and len(result["final"]["fresh"]) == 1
    # the same nodes, the same metric on every path (up to float summation order)
    for pop, node in zip(result["final"]["population"], result["final"]["per_node"], strict=True):
        assert pop == pytest.approx(node, abs=1e-4)
    assert result["final"]["fresh"][0] == pytest.approx(result["final"]["per_node"][0], abs=1e-4)


HEAVY = ["ppo_profile.py", "bbo.py", "bbo_ead.py", "headroom.py", "dpo_settings.py", "bbo_hparams.py", "tree_stage.py"]


def test_the_scripts_make_test_leaves_to_make_test_bench_parse_their_arguments():
    """``make test`` leaves the quick runs of these scripts (about 4 minutes of compiles) to ``make test-bench``;
    here each still starts, resolves its imports and parses its command line."""
    for name in HEAVY:
        proc = subprocess.run([sys.executable, str(BENCH / name), "--help"], cwd=ROOT, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0 and "--quick" in proc.stdout, (name, proc.stderr[-2000:])
