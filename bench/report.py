"""Rewrite docs/benchmarks.md from bench/results/*.json (`python -m bench --report`)."""

from __future__ import annotations

import json
from typing import Any

from bench._common import RESULTS, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
NOTES = ROOT / "bench" / "NOTES.md"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ok(good: bool | None) -> str:
    return "n/a" if good is None else ("met" if good else "**missed**")


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")


def _stamp(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (
        f"_{doc['date']}, commit `{doc['git_commit']}`, {m['cores']} cores ({m['cpu']}), "
        f"load average {m.get('load_average_1m', '?')} at the end; `{doc['command']}`_"
    )


def summary(docs: dict[str, dict[str, Any] | None]) -> list[str]:
    rows: list[tuple[str, str, str, bool | None]] = []
    if (w := docs["wait_lag"]) is not None:
        by = {r["strategy"]: r for r in w["figures"]["strategies"]}
        if (a := by.get("ws")) is not None:
            rows.append(
                (
                    "1a client WS: lag p50",
                    f"{_ms(a['lag']['p50_ms'])} ms",
                    "<= 1 ms",
                    a["lag"]["p50_ms"] <= 1,
                )
            )
            rows.append(
                (
                    "1a client WS: lag p99",
                    f"{_ms(a['lag']['p99_ms'])} ms",
                    "<= 5 ms",
                    a["lag"]["p99_ms"] <= 5,
                )
            )
            rows.append(
                (
                    "1a client WS: requests/job beyond submit",
                    f"{a['requests_per_job']:g}",
                    "0",
                    a["requests_per_job"] == 0,
                )
            )
        if (c := by.get("longpoll")) is not None:
            rows.append(
                (
                    "1c long poll: requests/job",
                    f"{c['requests_per_job']:g}",
                    "1",
                    c["requests_per_job"] <= 1,
                )
            )
            rows.append(
                (
                    "1c long poll: lag p50",
                    f"{_ms(c['lag']['p50_ms'])} ms",
                    "<= 2 ms",
                    c["lag"]["p50_ms"] <= 2,
                )
            )
        if (d := w["figures"].get("hint_15s")) is not None:
            rows.append(
                (
                    "1d hints, 15 s job: requests/job",
                    f"{d['requests_per_job']:g}",
                    "<= 4",
                    d["requests_per_job"] <= 4,
                )
            )
            rows.append(
                (
                    "1d hints, 15 s job: lag p50",
                    f"{_ms(d['lag']['p50_ms'])} ms",
                    "<= 100 ms",
                    d["lag"]["p50_ms"] <= 100,
                )
            )
    if (f := docs["fanout"]) is not None:
        for name, case in f["figures"].get("cases", {}).items():
            rows.append(
                (
                    f"2 fan-out {name}: dubsim / bare deliveries",
                    f"{case['ratio']:.2f}x",
                    ">= 1.0x",
                    case["ratio"] >= 1.0,
                )
            )
        if (idle := f["figures"].get("idle")) is not None:
            kb = idle["dubsim"]["kb_per_connection"]
            rows.append(
                (
                    f"2 idle WS x{idle['dubsim']['subscribers']:,}: RSS/connection",
                    f"{kb} KB (bare {idle['bare']['kb_per_connection']} KB)",
                    "<= 20 KB",
                    kb <= 20,
                )
            )
    if (r := docs["rest"]) is not None:
        g = r["figures"]["get_vs_bare"]
        rows.append(("3 GET /v1/jobs/{id} / bare hello", f"{g:.0%}", ">= 80 %", g >= 0.8))
    if (lc := docs["lifecycle"]) is not None:
        x = lc["figures"]
        rows.append(
            (
                f"4 lifecycle ({x['jobs_completed']:,} jobs): completed/s",
                f"{x['completed_per_s']:,}",
                ">= 6,000 (ack and publish after durable)",
                x["completed_per_s"] >= 6000,
            )
        )
        if (
            "bare_durable" in x
        ):  # the same-run baseline: what makes runs of different days comparable
            bare = x["bare_durable"]["completed_per_s"]
            rows.append(
                (
                    "4 lifecycle / bare durable lifecycle (same run)",
                    f"{x['ratio_to_bare_durable']:.2f}x ({x['completed_per_s']:,} / {bare:,})",
                    "(reported)",
                    None,
                )
            )
        rows.append(("4 lifecycle: peak server RSS", f"{x['rss_peak_mb']} MB", "(reported)", None))
    if (s := docs["slow_consumer"]) is not None:
        x = s["figures"]
        rows.append(
            (
                "5 slow consumer: readers' p99 change",
                f"{x['p99_change']:+.0%}",
                "<= +10 %",
                x["p99_change"] <= 0.10,
            )
        )
        rows.append(
            (
                "5 slow consumer: server RSS peak",
                f"{x['rss_peak_mb_with']} MB (without: {x['rss_peak_mb_without']} MB)",
                "bounded",
                None,
            )
        )
    if (lr := docs["lifecycle_redis"]) is not None:
        x = lr["figures"]
        c = x["cases"]
        rows.append(
            (
                f"6 lifecycle ({c['sqlite']['jobs_requested']:,} jobs) Redis-1 / SQLite",
                f"{x['redis_1_vs_sqlite']:.2f}x ({c['redis_1']['completed_per_s']:,} / "
                f"{c['sqlite']['completed_per_s']:,} jobs/s)",
                ">= 0.5x",
                x["redis_1_vs_sqlite"] >= 0.5,
            )
        )
        rows.append(
            (
                "6 lifecycle Redis-2 / Redis-1",
                f"{x['redis_2_vs_redis_1']:.2f}x ({c['redis_2']['completed_per_s']:,} jobs/s)",
                "(reported)",
                None,
            )
        )
    if (cl := docs["cross_lag"]) is not None:
        b = cl["figures"]["on_b_cross_process"]
        a = cl["figures"]["on_a_same_process"]
        rows.append(
            (
                "7 cross-process push lag p50 (Redis, A -> B)",
                f"{_ms(b['p50_ms'])} ms (same process: {_ms(a['p50_ms'])} ms)",
                "<= 2 ms",
                b["p50_ms"] <= 2 and b["missing"] == 0,
            )
        )
        rows.append(("7 cross-process push lag p99", f"{_ms(b['p99_ms'])} ms", "(reported)", None))
    if (k := docs["kill_rounds"]) is not None:
        for backend in ("sqlite", "redis"):
            if (x := k["figures"].get(backend)) is None:
                continue
            for key, label in (
                ("lost", "acknowledged changes lost"),
                ("changed", "terminal states changed"),
                ("wrong", "wrong wait() outcomes"),
            ):
                rows.append(
                    (
                        f"8 kill -9 x{x['rounds']} {backend}: {label}",
                        f"{x[key]}",
                        "0",
                        x[key] == 0,
                    )
                )
    if (md := docs.get("media")) is not None:
        for run in md["figures"]["runs"]:
            p99 = run["loop_p99_ms"]["media"]
            rows.append(
                (
                    f"9 media MEDIA_WORKERS={run['media_workers']}: loop p99 under media load",
                    f"{_ms(p99)} ms (baseline {_ms(run['loop_p99_ms']['baseline'])} ms)",
                    "<= 5 ms",
                    None if p99 is None else p99 <= 5,
                )
            )
    if (wh := docs.get("webhooks")) is not None:
        lag = wh["figures"]["lag"]
        rows.append(
            (
                "10 webhook event-to-delivery lag p50",
                f"{_ms(lag['p50_ms'])} ms",
                "<= 5 ms",
                lag["p50_ms"] <= 5,
            )
        )
        rows.append(("10 webhook lag p99", f"{_ms(lag['p99_ms'])} ms", "(reported)", None))
    if (rs := docs.get("redis_stall")) is not None:
        x = rs["figures"]
        rows.append(
            (
                f"11 Redis stalls x{len(x['steps'])}: processes not recovered",
                f"{x['not_recovered']} (slowest: {x['worst_s']} s after SIGCONT)",
                "0 (recovers by itself)",
                x["not_recovered"] == 0,
            )
        )
    out = ["| figure | measured | target | |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {_ok(d)} |" for a, b, c, d in rows]
    return out


def wait_lag(doc: dict[str, Any]) -> list[str]:
    out = [
        "## 1. Wait lag and cost",
        "",
        _stamp(doc),
        "",
        "| strategy | requests/job beyond submit | + shared connections | lag p50 ms | p99 ms | max ms | gave up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["figures"]["strategies"]:
        lag = r["lag"]
        out.append(
            f"| {r['label']} | {r['requests_per_job']:g} | {r['connections']} | {_ms(lag['p50_ms'])} "
            f"| {_ms(lag['p99_ms'])} | {_ms(lag['max_ms'])} | {r['gave_up']} |"
        )
    if (d := doc["figures"].get("hint_15s")) is not None:
        lag = d["lag"]
        out.append(
            f"| (d) on {d['jobs']} jobs of 15 s | {d['requests_per_job']:g} | 0 | {_ms(lag['p50_ms'])} "
            f"| {_ms(lag['p99_ms'])} | {_ms(lag['max_ms'])} | {d['gave_up']} |"
        )
    out += ["", "![lag against requests per job](../bench/results/wait_lag.png)", ""]
    return out


def fanout(doc: dict[str, Any]) -> list[str]:
    out = [
        "## 2. Fan-out",
        "",
        _stamp(doc),
        "",
        "| case | server | deliveries/s | events/s per subscriber | latency p50 ms | p99 ms | disconnected | server CPU s | subscribers' CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in doc["figures"].get("cases", {}).items():
        for server in ("dubsim", "bare"):
            x = case[server]
            out.append(
                f"| {name} | {server} | {x['deliveries_per_s']:,} | {x['events_per_s']} | "
                f"{_ms(x['latency']['p50_ms'])} | {_ms(x['latency']['p99_ms'])} | {x['disconnected']} | "
                f"{x['server_cpu_s']} | {x.get('subscribers_cpu_s', '-')} |"
            )
        out.append(f"| {name} | **ratio** | **{case['ratio']:.2f}x** | | | | | | |")
    if (idle := doc["figures"].get("idle")) is not None:
        out += [
            "",
            "| idle WebSocket subscribers | RSS before MB | after MB | KB per connection |",
            "|---|---|---|---|",
        ]
        for server in ("dubsim", "bare"):
            x = idle[server]
            out.append(
                f"| {server} x{x['subscribers']:,} | {x['rss_before_mb']} | {x['rss_after_mb']} | {x['kb_per_connection']} |"
            )
    out += ["", "![fan-out](../bench/results/fanout.png)", ""]
    return out


def rest(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    out = [
        "## 3. REST",
        "",
        _stamp(doc),
        "",
        "| target | requests/s (median run) | all runs | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("bare_hello", "bare aiohttp hello"),
        ("get_job", "GET /v1/jobs/{id}"),
        ("post_job", "POST /v1/jobs"),
    ):
        x = f[key]
        out.append(
            f"| {label} | {x['requests_per_s']:,} | {', '.join(f'{v:,}' for v in f['all_runs'][key])} | "
            f"{_ms(x['latency'].get('p50_ms'))} | {_ms(x['latency'].get('p99_ms'))} | {x['non_2xx']} |"
        )
    out += [
        "",
        f"GET is {f['get_vs_bare']:.0%} of the bare hello, POST {f['post_vs_bare']:.0%}.",
        "",
        "![REST](../bench/results/rest.png)",
        "",
    ]
    return out


def lifecycle(doc: dict[str, Any]) -> list[str]:
    x = doc["figures"]
    bare = x.get("bare_durable")
    cases = [("dubsim", x)]
    if bare is not None:  # the baseline just before and just after dubsim's run
        cases = [
            ("bare durable, before", bare["before"]),
            *cases,
            ("bare durable, after", bare["after"]),
        ]
    out = [
        "## 4. Lifecycle throughput",
        "",
        _stamp(doc),
        "",
        "| server | jobs submitted | completed | submit phase s | first submit to last finish s | completed/s | server CPU s | CPU per job us | RSS start MB | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in cases:
        per_job = round(c["server_cpu_s"] / max(1, c["jobs_completed"]) * 1e6)
        out.append(
            f"| {name} | {c['jobs_submitted'] or '-'} | {c['jobs_completed']:,} | {c['submit_phase_s']} | "
            f"{c['elapsed_s']} | **{c['completed_per_s']:,}** | {c['server_cpu_s']} | {per_job} | "
            f"{c['rss_start_mb']} | {c['rss_peak_mb']} |"
        )
    if "bare_durable" in x:
        out += [
            "",
            f"dubsim / bare durable lifecycle (`bench/_bare_lifecycle.py`, the mean of its two runs) "
            f"in this run: **{x['ratio_to_bare_durable']:.2f}x**.",
        ]
    return [
        *out,
        "",
        "![lifecycle](../bench/results/lifecycle.png)",
        "",
    ]


def slow_consumer(doc: dict[str, Any]) -> list[str]:
    x = doc["figures"]
    out = [
        "## 5. Slow consumer",
        "",
        _stamp(doc),
        "",
        "| run | never-reader | readers' p50 ms | p99 ms | frames received | slow consumers closed | RSS start MB | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(x["runs"], 1):
        out.append(
            f"| {i} | {'yes' if r['with_slow_consumer'] else 'no'} | {_ms(r['latency']['p50_ms'])} | "
            f"{_ms(r['latency']['p99_ms'])} | {r['frames']:,} | {r['slow_consumers_closed']} | "
            f"{r['rss_start_mb']} | {r['rss_peak_mb']} |"
        )
    out += [
        "",
        f"Median p99: {_ms(x['p99_ms_without'])} ms without, {_ms(x['p99_ms_with'])} ms with the "
        f"never-reader ({x['p99_change']:+.0%}).",
        "",
        "![slow consumer](../bench/results/slow_consumer.png)",
        "",
    ]
    return out


def lifecycle_redis(doc: dict[str, Any]) -> list[str]:
    x = doc["figures"]
    out = [
        "## 6. Lifecycle on Redis",
        "",
        _stamp(doc),
        "",
        "| case | jobs completed | submit phase s | first submit to last finish s | completed/s | dubsim CPU s | redis-server CPU s | RSS peak MB (all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("sqlite", "SQLite, 1 process"),
        ("redis_1", "Redis, 1 process"),
        ("redis_2", "Redis, 2 processes"),
    ):
        c = x["cases"][key]
        out.append(
            f"| {label} | {c['jobs_completed']:,} | {c['submit_phase_s']} | {c['elapsed_s']} | "
            f"**{c['completed_per_s']:,}** | {c['server_cpu_s']} | {c['redis_cpu_s'] or '-'} | "
            f"{c['rss_peak_mb']} |"
        )
    out += [
        "",
        f"Redis-1 / SQLite: **{x['redis_1_vs_sqlite']:.2f}x**; Redis-2 / Redis-1: "
        f"**{x['redis_2_vs_redis_1']:.2f}x**.",
        "",
    ]
    return out


def cross_lag(doc: dict[str, Any]) -> list[str]:
    x = doc["figures"]
    out = [
        "## 7. Cross-process push lag",
        "",
        _stamp(doc),
        "",
        "| subscriber | events | lag p50 ms | p99 ms | max ms | missing |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("on_b_cross_process", "Redis, on B (jobs submitted on A)"),
        ("on_a_same_process", "Redis, on A (same process as the submits)"),
        ("sqlite", "SQLite, one process (reference)"),
    ):
        if (c := x.get(key)) is not None:
            out.append(
                f"| {label} | {c['n']:,} | {_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} | "
                f"{_ms(c['max_ms'])} | {c['missing']} |"
            )
    out.append("")
    return out


def kill_rounds(doc: dict[str, Any]) -> list[str]:
    out = [
        "## 8. kill -9 rounds",
        "",
        _stamp(doc),
        "",
        "| backend | rounds | acked submits | acked cancels | 2xx in the 100 ms before a kill | unacked submits | lost | terminal changed | wrong waits | takeover p50 s | max s | observer resets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("sqlite", "redis"):
        if (x := doc["figures"].get(backend)) is None:
            continue
        t = x["takeover_s"]
        out.append(
            f"| {backend} | {x['rounds']} | {x['acked_submits']} | {x['acked_cancels']} | "
            f"{x['acks_in_100ms_before_kill']} | {x['unacked_submits']} | **{x['lost']}** | "
            f"**{x['changed']}** | **{x['wrong']}** | {t['p50'] if t['p50'] is not None else '-'} | "
            f"{t['max'] if t['max'] is not None else '-'} | {x['observer_resets']} |"
        )
    redis = doc["figures"].get("redis")
    if redis is not None:
        takeovers = ", ".join(
            "-" if r["takeover_s"] is None else f"{r['takeover_s']:.2f}" for r in redis["per_round"]
        )
        out += [
            "",
            f"Redis takeover per round (s, LEASE_S={doc['params']['lease_s']:g}): {takeovers}.",
        ]
    out.append("")
    return out


def media(doc: dict[str, Any]) -> list[str]:
    clip = doc["figures"]["clip"]
    out = [
        "## 9. Media jobs",
        "",
        _stamp(doc),
        "",
        f"{doc['params']['jobs']} media jobs at once on a {clip['duration_s']:g} s "
        f"{clip['size']} {clip['codec']} clip, plain jobs at {doc['params']['plain_rate']:g}/s "
        "alongside. Real-time factor: media seconds processed per wall second.",
        "",
        "| MEDIA_WORKERS | jobs/min | real-time factor | per job p50 s | loop p99 ms baseline | "
        "loop p99 ms media | loop max ms media | plain push lag p50/p99 ms baseline | "
        "plain push lag p50/p99 ms media |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["figures"]["runs"]:
        lag = r["plain_push_lag"]
        out.append(
            f"| {r['media_workers']} | {r['jobs_per_min']:g} | {r['realtime_factor']:g}x | "
            f"{r['per_job_s']['p50_ms'] / 1000:.2f} | {_ms(r['loop_p99_ms']['baseline'])} | "
            f"{_ms(r['loop_p99_ms']['media'])} | {_ms(r['loop_max_ms'])} | "
            f"{_ms(lag['baseline']['p50_ms'])}/{_ms(lag['baseline']['p99_ms'])} | "
            f"{_ms(lag['media']['p50_ms'])}/{_ms(lag['media']['p99_ms'])} |"
        )
    out.append("")
    return out


def webhooks(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    lag = f["lag"]
    return [
        "## 10. Webhook deliveries",
        "",
        "| run | deliveries | per second |",
        "|---|---|---|",
        f"| bare aiohttp client, one at a time (baseline) | {f['baseline']['requests']} | "
        f"{f['baseline']['per_second']:g} |",
        f"| 1 endpoint, backlog drained | {f['one']['deliveries']} | {f['one']['per_second']:g} |",
        f"| 100 endpoints, backlog drained | {f['hundred']['deliveries']} | "
        f"{f['hundred']['per_second']:g} |",
        "",
        f"Event-to-delivery lag over {lag['n']} jobs: p50 {_ms(lag['p50_ms'])} ms "
        f"(target <= 5 ms), p99 {_ms(lag['p99_ms'])} ms, max {_ms(lag['max_ms'])} ms.",
        "",
    ]


def redis_stall(doc: dict[str, Any]) -> list[str]:
    def worst(values: list[float | None]) -> str:
        return "never" if None in values else f"{max(v for v in values if v is not None):g}"

    out = [
        "## 11. Redis stalls",
        "",
        _stamp(doc),
        "",
        "Redis SIGSTOPped, then SIGCONTed, under two processes (`make cluster`'s setup); seconds",
        "from the SIGCONT until both answer `/healthz` 200, and until a job made on one is found",
        "on the other (the slower process of the two); `during`: what `/healthz` answered just",
        "before the SIGCONT (a stall shorter than the 5 s socket timeout may end before anything",
        "failed).",
        "",
        "| stall | load | healthy after | sees the other's write after | during |",
        "|---|---|---|---|---|",
    ]
    for step in doc["figures"]["steps"]:
        out.append(
            f"| {step['stall_s']:g} s | {'yes' if step['load'] else 'idle'} | "
            f"{worst(step['healthy_s'])} s | {worst(step['sees_s'])} s | "
            f"{' / '.join(str(d) for d in step['during'])} |"
        )
    return [*out, ""]


def main() -> None:
    from bench.__main__ import ORDER  # the one list of benchmarks

    docs = {name: _load(name) for name in ORDER}
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (`make bench`) from `bench/results/*.json`; rerun it to",
        "refresh this page (`python -m bench --report` only rewrites it). Every benchmark runs the",
        "real server (`python -m service`) on loopback, with its baseline in the same run: these",
        "machines are shared and noisy, so read the ratios and medians, not the absolute numbers.",
        "",
        "## Every figure against its target",
        "",
        *summary(docs),
        "",
    ]
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    sections = {
        "wait_lag": wait_lag,
        "fanout": fanout,
        "rest": rest,
        "lifecycle": lifecycle,
        "slow_consumer": slow_consumer,
        "lifecycle_redis": lifecycle_redis,
        "cross_lag": cross_lag,
        "kill_rounds": kill_rounds,
        "media": media,
        "webhooks": webhooks,
        "redis_stall": redis_stall,
    }
    for name in ORDER:
        doc = docs[name]
        if doc is not None:
            lines += sections[name](doc)
    DOC.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
