"""Smoke runs of the benchmark scripts at a tiny size, so that they do not rot.

They check that each script runs, cleans up and reports every figure; never how fast (the
machines that run the tests are too noisy for thresholds).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from scripts import run_script

ROOT = Path(__file__).resolve().parent.parent


def _report(args: list[str], timeout: float = 100) -> dict[str, Any]:
    code, out, err = run_script([*args, "--json"], timeout=timeout)
    lines = out.splitlines()
    assert len(lines) == 1, f"--json prints exactly one line on stdout:\n{out}\n{err}"
    result: dict[str, Any] = json.loads(lines[0])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["states_equal"] is True
    return result


def _assert_positive(result: dict[str, Any], keys: list[str]) -> None:
    for key in keys:
        value = result[key]
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


def test_throughput_reports_both_pipelines_and_equal_states() -> None:
    result = _report(["bench/throughput.py", "--events", "2000"])
    _assert_positive(
        result,
        [
            "actorsource_events_per_s",
            "actorsource_no_fastpath_events_per_s",
            "baseline_events_per_s",
            "baseline_fastpull_events_per_s",
            "ratio",
            "ratio_vs_fastpull",
            "fastpath_gain",
        ],
    )
    assert result["events"] == 2000
    # The FastStream contender runs only where the bench extra is installed.
    if importlib.util.find_spec("faststream") is None:
        assert result["faststream_events_per_s"] is None
        assert result["ratio_vs_faststream"] is None
    else:
        _assert_positive(result, ["faststream_events_per_s", "ratio_vs_faststream"])


def test_throughput_compares_the_actor_with_and_without_its_metrics_scraped() -> None:
    pytest.importorskip("prometheus_client")
    only = "actorsource,actorsource_metrics"
    result = _report(
        ["bench/throughput.py", "--events", "3000", "--only", only, "--scrape-every", "0.02"]
    )
    _assert_positive(result, ["actorsource_metrics_events_per_s", "metrics_cost"])
    assert result["scrapes"][0] >= 1  # the scraper read the metrics while the actor ran


def test_throughput_runs_only_the_contenders_asked_for() -> None:
    result = _report(["bench/throughput.py", "--events", "500", "--only", "hand_tuned"])
    _assert_positive(result, ["hand_tuned_events_per_s"])
    assert result["actorsource_events_per_s"] is None
    assert result["ratio_vs_hand_tuned"] is None
    assert list(result["runs"]) == ["hand_tuned"]


def test_event_codecs_reports_decode_and_encode_costs_of_each_kind_of_event() -> None:
    result = _report(["bench/event_codecs.py", "--events", "300", "--repeat", "1"])
    _assert_positive(result, ["dataclass_decode_ns", "msgspec_decode_ns", "msgspec_encode_ns"])
    if importlib.util.find_spec("pydantic") is not None:
        _assert_positive(result, ["pydantic_decode_ns", "pydantic_vs_msgspec"])


def test_recovery_reports_replay_restart_and_memory() -> None:
    result = _report(["bench/recovery.py", "--events", "5000"])
    _assert_positive(
        result,
        [
            "replay_events_per_s",
            "baseline_fold_events_per_s",
            "ratio",
            "restart_to_ready_ms",
            "recovery_ms",
            "restart_to_first_applied_ms",
            "peak_rss_growth_mb",
        ],
    )
    assert result["events"] == 5000


def test_recovery_can_build_its_journal_by_running_the_actor() -> None:
    result = _report(["bench/recovery.py", "--events", "2000", "--build", "actor"])
    _assert_positive(result, ["replay_events_per_s", "restart_to_ready_ms"])
    assert result["build"] == "actor"


def test_latency_reports_percentiles_of_every_event() -> None:
    result = _report(["bench/latency.py", "--rate", "500", "--seconds", "1"])
    _assert_positive(
        result,
        ["p50_ms", "p99_ms", "max_ms", "ack_p50_ms", "ack_p99_ms", "achieved_rate", "count"],
    )
    assert result["count"] == result["ack_count"] == 500
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_outbox_reports_the_actor_and_both_publishing_baselines() -> None:
    result = _report(["bench/outbox.py", "--events", "1000"])
    _assert_positive(
        result,
        [
            "actorsource_published_per_s",
            "actorsource_applied_per_s",
            "baseline_sequential_per_s",
            "baseline_pipelined_per_s",
            "ratio",
            "ratio_vs_pipelined",
        ],
    )
    assert result["events"] == 1000


def test_shop_chaos_kills_the_worker_and_finds_every_order_final_once() -> None:
    result = _report(["bench/shop_chaos.py", "--orders", "40", "--kills", "2"])
    assert (result["orders"], result["kills"]) == (40, 2)
    assert result["order_entities"] == 40  # one entity per order
    for key in ("unfinished", "duplicated", "inconsistent", "diverged", "out_of_order"):
        assert result[key] == 0, (key, result)


def test_chaos_stores_duplicates_after_the_window_and_checks_stream_order_offline() -> None:
    args = ["--events", "1500", "--kills", "4", "--stored-duplicates", "30", "--json"]
    code, out, err = run_script(["bench/chaos.py", *args])
    result = json.loads(out.splitlines()[-1])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["kills"] == 4
    assert result["stored_duplicates"] > 0  # the stream really stored them a second time
    assert result["published"] == result["applied"] == 1500
    for key in ("lost", "duplicated", "diverged", "out_of_order", "duplicates_applied"):
        assert result[key] == 0, (key, result)
    assert result["export_seq_backwards"] == result["subject_order_broken"] == 0


def _assert_answers_consistent(result: dict[str, Any]) -> None:
    assert result["query_replies"] > 0, result
    for key in ("query_replies_inconsistent", "query_backwards", "query_after_seq_short"):
        assert result[key] == 0, (key, result)


def test_chaos_checks_every_answer_of_queries_asked_while_workers_are_killed() -> None:
    args = ["--events", "1500", "--kills", "4", "--queries", "3", "--json"]
    code, out, err = run_script(["bench/chaos.py", *args])
    result = json.loads(out.splitlines()[-1])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["published"] == result["applied"] == 1500
    assert result["query_clients"] == 3
    _assert_answers_consistent(result)


def test_chaos_entity_mode_kills_workers_while_entities_load_and_passivate() -> None:
    args = ["--events", "1500", "--kills", "4", "--entities", "12", "--queries", "2", "--json"]
    code, out, err = run_script(["bench/chaos.py", *args])
    result = json.loads(out.splitlines()[-1])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["kills"] == 4
    assert result["published"] == result["applied"] == 1500
    assert result["entities"] == 12
    # Every account was snapshotted (12 accounts, at most 4 resident: passivated and loaded
    # again), and every stored snapshot was held to the fold up to its position.
    assert result["entities_snapshotted"] == 12
    assert result["entity_snapshots"] >= 12
    for key in (
        "lost",
        "duplicated",
        "diverged",
        "out_of_order",
        "entity_order",
        "entities_diverged",
        "snapshots_diverged",
    ):
        assert result[key] == 0, (key, result)
    _assert_answers_consistent(result)  # each account asked as the entity it is


def test_entities_reports_throughput_memory_restart_and_the_singleton() -> None:
    args = ["--entities", "3000", "--events", "4000", "--compare-events", "2000", "--repeat", "1"]
    result = _report(["bench/entities.py", *args, "--probe-rate", "200", "--probe-seconds", "0.5"])
    _assert_positive(
        result,
        [
            "first_tenth_events_per_s",
            "last_tenth_events_per_s",
            "ratio_last_first",
            "peak_rss_mb",
            "passivated_p99_ms",
            "restart_to_ready_ms",
            "restart_to_first_applied_ms",
            "restart_to_first_applied_no_check_ms",
            "singleton_events_per_s",
            "entities_events_per_s",
            "ratio_vs_singleton",
        ],
    )
    assert result["mismatches"] == 0
    assert result["probe_loads"] == result["probe_events"] == 100  # each one loaded its entity
    # 3,000 accounts all stay resident: no load finds events of its own account
    assert result["found_loads_by_tenth"] == [0.0] * 10
    assert result["event_us_fit"][0] > 0


def test_state_growth_reports_both_states_their_snapshots_and_restarts() -> None:
    args = ["--keys", "3000", "--events", "3000", "--reference-keys", "50"]
    result = _report(["bench/state_growth.py", *args, "--rate", "500", "--probe-seconds", "0.5"])
    for prefix in ("", "reference_"):
        _assert_positive(
            result,
            [
                prefix + key
                for key in (
                    "first_sixth_events_per_s",
                    "last_sixth_events_per_s",
                    "ratio_last_first",
                    "snapshots",
                    "snapshot_bytes",
                    "snapshot_encode_ms",
                    "snapshot_commit_ms",
                    "probe_p99_ms",
                    "restart_to_ready_ms",
                    "crash_restart_to_ready_ms",
                )
            ],
        )
    assert result["keys"] == result["events"] == 3000


def test_queries_reports_latencies_rates_and_the_consumption_ratio() -> None:
    result = _report(
        [
            "bench/queries.py",
            "--seconds",
            "0.5",
            "--backlog",
            "3000",
            "--window",
            "0.2",
            "--repeat",
            "1",
        ]
    )
    _assert_positive(
        result,
        [
            "singleton_p50_ms",
            "singleton_p99_ms",
            "entity_p50_ms",
            "entity_p99_ms",
            "queries_per_s_sequential",
            "queries_per_s_16_in_flight",
            "consumption_per_s",
            "ratio_consumption_with_queries",
        ],
    )


@pytest.mark.parametrize(
    "script",
    [
        "throughput",
        "recovery",
        "latency",
        "outbox",
        "chaos",
        "shop_chaos",
        "scaling",
        "state_growth",
        "queries",
        "entities",
        "checkpoint_restore",
        "event_codecs",
    ],
)
def test_every_bench_script_explains_itself(script: str) -> None:
    code, out, err = run_script([f"bench/{script}.py", "--help"], timeout=30)
    assert code == 0, err
    assert "--json" in out


@pytest.mark.slow
def test_partition_chaos_reports_every_figure_per_partition_and_in_total() -> None:
    code, out, err = run_script(
        [
            "bench/partition_chaos.py",
            *("--workers", "2", "--cluster", "--partitions", "4", "--seconds", "12"),
            *("--seed", "3", "--lease-time", "3", "--json"),
            *("--wipe-share", "0.5", "--checkpoint-every", "100"),
        ],
        timeout=240,
    )
    result = json.loads(out.splitlines()[-1])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert set(result["per_partition"]) == {"0", "1", "2", "3"}
    assert result["checkpoints_uploaded"] > 0
    for figures in [result, *result["per_partition"].values()]:
        assert figures["lost"] == figures["duplicated"] == 0
        assert figures["out_of_order"] == figures["diverged"] == 0
        assert figures["fenced"] >= 0
    assert result["committed"] == result["published"] > 0
    assert sum(result["actions"].values()) > 0


def test_checkpoint_restore_reports_both_ways_of_restoring_a_partition() -> None:
    result = _report(["bench/checkpoint_restore.py", "--entities", "3000", "--batch", "200"])
    _assert_positive(
        result,
        [
            "checkpoint_copy_s",
            "checkpoint_upload_s",
            "restore_to_ready_s",
            "import_to_ready_s",
            "ratio_import_restore",
        ],
    )


def test_scaling_reports_events_per_s_and_cpu_per_worker_count() -> None:
    result = _report(
        [
            *("bench/scaling.py", "--workers", "1,2", "--events", "2000", "--servers", "1"),
            *("--partitions", "4", "--moves", "0"),
        ]
    )
    _assert_positive(
        result,
        [f"{name}_{n}" for name in ("events_per_s", "worker_cpu_s_per_10k") for n in (1, 2)],
    )
    assert result["server_cpu_s_per_10k_1"] >= 0


@pytest.mark.slow
def test_scaling_reports_failover_and_handoff_times() -> None:
    result = _report(
        [
            *("bench/scaling.py", "--workers", "1,4", "--events", "2000", "--partitions", "4"),
            *("--moves", "1", "--lease-time", "3"),
        ],
        timeout=240,
    )
    _assert_positive(
        result,
        ["worker_cpu_ratio_4_to_1", "failover_s_p50", "failover_s_max", "handoff_s_p50"],
    )
    assert result["handoff_s_max"] >= result["handoff_s_p50"]


def test_fence_cost_reports_every_figure_on_r1_and_r3() -> None:
    result = _report(
        ["bench/fence_cost.py", "--events", "4000", "--partitions", "4", "--rounds", "2"]
    )
    r1 = (
        "unpartitioned",
        "partitioned",
        "fenced",
        "memory_unpartitioned",
        "memory_fenced",
        "few_keys_unpartitioned",
        "few_keys_fenced",
    )
    _assert_positive(
        result,
        [
            f"{replicas}_{kind}_{figure}"
            for replicas, kinds in (("r1", r1), ("r3", ("unpartitioned", "fenced")))
            for kind in kinds
            for figure in ("events_per_s", "worker_cpu_us_per_event", "server_cpu_us_per_event")
        ]
        + [
            "ratio_r1",
            "ratio_r1_partitioned",
            "ratio_r1_memory_input",
            "ratio_r1_key_per_partition",
            "ratio_r3",
        ],
    )
    assert len(result["ratios_r1"]) == 2  # one per round, each of its own round's phases
    # Once consuming: with so few events a partition may finish before the last one starts.
    assert result["ratio_r1_steady"] >= 0
    assert result["ratio_r3_steady"] >= 0


def test_tracing_cost_reports_off_api_and_sdk() -> None:
    result = _report(["bench/tracing_cost.py", "--events", "2000", "--repeat", "1"])
    _assert_positive(
        result,
        ["off_events_per_s", "api_events_per_s", "sdk_events_per_s", "api_cost", "sdk_cost"],
    )
    assert result["spans"] == 20  # one message in 100 sampled, one span each


def test_triage_cost_reports_each_way() -> None:
    code, out, err = run_script(["bench/triage_cost.py", "--batches", "20", "--json"])
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    _assert_positive(result, ["plain_ns", "off_ns", "api_ns", "sdk_1pct_ns"])


@pytest.mark.skipif(shutil.which("perf") is None, reason="Linux perf is not installed")
def test_fence_server_profile_reports_where_the_server_spends_per_phase() -> None:
    script = "bench/fence_server_profile.py"
    result = _report([script, "--events", "2000", "--partitions", "2", "--rounds", "1"])
    phases = ("unpartitioned", "fenced", "memory_unpartitioned", "memory_fenced")
    for phase in (*phases, "few_keys_fenced"):
        _assert_positive(
            result,
            [f"{phase}_{figure}" for figure in ("events_per_s", "server_cpu_us_per_event")]
            # the delivery loop is on the stack of every delivery: a report read wrong
            # (every share 0) fails here
            + [f"{phase}_delivery_share", f"{phase}_delivery_us_per_event"],
        )
        for figure in ("first_matching", "subject_walk", "memory_next", "store_write"):
            assert 0 <= result[f"{phase}_{figure}_share"] <= 1
    assert "fenced_extra_first_matching_us" in result


def test_fence_pairs_reports_the_ratio_of_each_pair_and_its_spread() -> None:
    result = _report(
        [
            "bench/fence_pairs.py",
            "--events",
            "3000",
            "--partitions",
            "2",
            "--pairs",
            "3",
            "--variants",
            "disk,one_key",
        ]
    )
    assert result["variants"] == ["disk", "one_key"]
    for prefix, plain, fenced in (
        ("", "unpartitioned", "fenced"),
        ("one_key_", "few_keys_unpartitioned", "few_keys_fenced"),
    ):
        assert len(result[f"{prefix}ratios_r1"]) == 3  # one per pair, of its own two phases
        assert (
            result[f"{prefix}ratio_r1_q1"]
            <= result[f"{prefix}ratio_r1_median"]
            <= result[f"{prefix}ratio_r1_q3"]
        )
        _assert_positive(
            result,
            [
                f"{prefix}ratio_r1_median",
                f"{prefix}ratio_r1_steady_median",
                f"{prefix}cpu_ratio_r1_median",
            ]
            + [
                f"{phase}_{figure}"
                for phase in (plain, fenced)
                for figure in (
                    "events_per_s",
                    "worker_cpu_us_per_event",
                    "server_cpu_us_per_event",
                )
            ],
        )
    assert "memory_ratio_r1_median" not in result  # only the variants asked for


def test_fence_pairs_refuses_an_unknown_variant_in_one_line() -> None:
    code, out, err = run_script(["bench/fence_pairs.py", "--variants", "disk,ssd"])
    assert code == 2
    assert out == ""
    assert "unknown variant 'ssd'; choose from disk, memory, one_key" in err


def test_fence_append_reports_each_way_of_sending_the_append() -> None:
    result = _report(
        ["bench/fence_append.py", "--events", "4000", "--partitions", "4", "--rounds", "1"]
    )
    for way in ("js_publish", "shared_reply", "no_wait"):
        _assert_positive(result, [f"{way}_ratio_r1_median", f"{way}_appends_per_round"])
        assert len(result[f"{way}_ratios_r1"]) == 1
