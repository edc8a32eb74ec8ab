"""Ratios to ceilings, the performance targets, and the JSON / Markdown / PNG outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# scenario → (ceiling scenario, what the ratio compares)
CEILINGS: dict[str, list[str]] = {
    "balance": ["ceiling_bare_loyalty", "ceiling_pg_balance"],
    "withdrawal": ["ceiling_pg_withdrawal"],
    "seed_withdrawal": ["ceiling_pg_withdrawal", "withdrawal"],
    "seed_balance": ["balance"],
    "refresh": ["ceiling_bare_sso"],
    "login": ["ceiling_argon2"],
    "ceiling_bare_loyalty": ["ceiling_go_http"],
}
LOGOUT_DEADLINE_MS = 1000.0  # SPEC §3.1: refused by sso and loyalty within 1 s
LOGINS_PER_CORE = 30.0
TAIL_P99_MS = {"balance": 10.0, "withdrawal": 20.0}  # p99 at the run's connections
TWIN_RATIO = 0.9  # the original's routes against their /me twins
# (route, its /me twin): measured A B B A; the second legs are named with LEG2 appended.
TWINS = (("seed_balance", "balance"), ("seed_withdrawal", "withdrawal"))
LEG2 = "_leg2"
BONUS_P99_MS = 15.0
NOISY_OTHER_PCT = 10.0  # "other" CPU above this share of the machine marks a noisy figure


def _by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rec["name"]: rec for rec in document["scenarios"]}


def finish(document: dict[str, Any]) -> None:
    """Add each scenario's ratio(s) to its ceiling(s), and the targets, to ``document``."""
    records = _by_name(document)
    for name, ceilings in CEILINGS.items():
        rec = records.get(name)
        if rec is None:
            continue
        ratios = {}
        for ceiling in ceilings:
            top = records.get(ceiling)
            if top and top["throughput_rps"]:
                ratios[ceiling] = round(rec["throughput_rps"] / top["throughput_rps"], 3)
        rec["ceiling"] = ceilings[0]
        rec["ratio"] = ratios.get(ceilings[0])
        rec["ratios"] = ratios
    for route, twin in TWINS:
        pairs = [(records.get(route), records.get(twin)),
                 (records.get(route + LEG2), records.get(twin + LEG2))]
        legs = [(a["throughput_rps"], b["throughput_rps"]) for a, b in pairs
                if a and b and b["throughput_rps"]]
        if len(legs) < 2:
            continue
        # Over both legs: a machine that speeds up or slows down during the pair (it does, by
        # ±15 % within seconds on shared cores) favours neither route.
        rec = records[route]
        rec["twin_legs"] = [round(a / b, 3) for a, b in legs]
        rec["twin_cpu_legs"] = [{"route": _cpu_per_request(a), "twin": _cpu_per_request(b)}
                                for a, b in pairs if a and b]
        combined = round(sum(a for a, _ in legs) / sum(b for _, b in legs), 3)
        rec["ratios"][twin] = combined
        if rec["ceiling"] == twin:
            rec["ratio"] = combined
    for name in ("logout_refusal", "logout_refusal_broker_kill"):
        rec = records.get(name)
        if rec and rec["latency_ms"].get("max") is not None:
            rec["ceiling"] = "deadline_1s"
            rec["ratio"] = round(rec["latency_ms"]["max"] / LOGOUT_DEADLINE_MS, 3)
            rec["ratios"] = {"deadline_1s": rec["ratio"]}
    logout = records.get("logout_refusal")
    killed = records.get("logout_refusal_broker_kill")
    cpus = document["meta"]["machine"]["cpus"]
    login = records.get("login")
    if login:
        sso_cpu = login["cpu"]["cpu_seconds"].get("sso") or 0.0
        login["logins_per_core"] = round(login["throughput_rps"] / cpus, 1)
        login["logins_per_sso_cpu_second"] = (
            round(login["requests"] / sso_cpu, 1) if sso_cpu else None)

    targets = []

    def target(name: str, text: str, value: float | None, threshold: float,
               higher_is_better: bool = True, unit: str = "") -> None:
        met = None if value is None else (
            value >= threshold if higher_is_better else value <= threshold)
        targets.append({"name": name, "target": text, "value": value, "threshold": threshold,
                        "unit": unit, "met": met})

    target("withdrawal_vs_pgbench", "withdrawal ≥ 1.0 x pgbench ceiling of its SQL",
           records.get("withdrawal", {}).get("ratio"), 1.0, unit="x")
    for name, limit in TAIL_P99_MS.items():
        rec = records.get(name)
        target(f"{name}_p99", f"{name.replace('_', ' ')} p99 ≤ {limit:g} ms at "
               f"{rec['connections'] if rec else '-'} connections",
               rec["latency_ms"].get("p99") if rec else None, limit, higher_is_better=False,
               unit="ms")
    for (route, twin), text in zip(TWINS, ("GET /loyalty/{uuid}", "POST /loyalty"),
                                   strict=True):
        rec = records.get(route)
        target(f"{route}_vs_{twin}", f"{text} ≥ {TWIN_RATIO:g} x its /me twin",
               rec.get("ratios", {}).get(twin) if rec else None, TWIN_RATIO, unit="x")
    target("balance_vs_bare", "balance read ≥ 0.5 x bare endpoint of the same stack",
           records.get("balance", {}).get("ratio"), 0.5, unit="x")
    bare, go = records.get("ceiling_bare_loyalty"), records.get("ceiling_go_http")
    target("bare_vs_go", "bare endpoint ≥ 0.5 x Go net/http answering the same JSON",
           bare.get("ratio") if bare else None, 0.5, unit="x")
    if bare and go:
        bare_cpu = bare["cpu"]["cpu_seconds"].get("loyalty") or 0.0
        go_cpu = go["cpu"]["cpu_seconds"].get("go") or 0.0
        if bare_cpu and go_cpu:
            # Requests per CPU-second of the server: what the stack costs, whatever the load.
            bare["ratio_per_cpu_second"] = round(
                (bare["requests"] / bare_cpu) / (go["requests"] / go_cpu), 3)
    target("logins_per_core",
           f"≥ {LOGINS_PER_CORE:g} password logins/s per core ({cpus} cores)",
           login.get("logins_per_core") if login else None, LOGINS_PER_CORE, unit="/s/core")
    target("login_vs_argon2", "login ≥ 0.9 x bare Argon2id verifications on the same cores",
           login.get("ratio") if login else None, 0.9, unit="x")
    bonus = records.get("registration_bonus")
    target("bonus_p99", f"registration → bonus visible p99 ≤ {BONUS_P99_MS:g} ms",
           bonus["latency_ms"].get("p99") if bonus else None, BONUS_P99_MS,
           higher_is_better=False, unit="ms")
    target("logout_deadline", "logout → refused at loyalty within 1 s (SPEC, worst case)",
           logout["latency_ms"].get("max") if logout else None, LOGOUT_DEADLINE_MS,
           higher_is_better=False, unit="ms")
    if killed:
        target("logout_deadline_broker_kill",
               "logout → refused at every loyalty replica within 1 s, one broker SIGKILLed "
               "just before (worst case)", killed["latency_ms"].get("max"), LOGOUT_DEADLINE_MS,
               higher_is_better=False, unit="ms")
    total_errors = sum(int(rec.get("errors") or 0) for rec in document["scenarios"])
    target("zero_errors", "0 errors in every scenario", total_errors, 0,
           higher_is_better=False)
    check = document["meta"].get("ledger_check") or {}
    if check:
        target("ledger_consistent", "every balance = sum of its ledger, none negative",
               check.get("mismatched", 0) + check.get("negative", 0), 0,
               higher_is_better=False)
    document["targets"] = targets


def problems(document: dict[str, Any]) -> list[str]:
    """Errors (fail the run) and missed targets (reported, do not fail it)."""
    found = []
    for rec in document["scenarios"]:
        if rec.get("errors"):
            found.append(f"errors: {rec['name']} had {rec['errors']} errors "
                         f"({rec.get('error_detail')})")
    for name, shape in (document["meta"].get("sql_check") or {}).items():
        if not shape["match"]:
            found.append(f"ceiling drift: bench/sql/{name}.sql runs {shape['pgbench']}, the "
                         f"service sends {shape['service']}; words differ: "
                         f"{shape.get('words')}")
    for t in document.get("targets", []):
        if t["met"] is False and t["name"] in ("ledger_consistent",):
            found.append(f"error: {t['target']}: {t['value']}")
        elif t["met"] is False:
            found.append(f"target missed: {t['target']}: {t['value']}")
    return found


# -- Markdown -----------------------------------------------------------------------------------


def _cpu_per_request(rec: dict[str, Any]) -> dict[str, float]:
    """µs of CPU per request of loyalty and of wrk during a measurement."""
    seconds = (rec.get("cpu") or {}).get("cpu_seconds") or {}
    requests = rec.get("requests") or 0
    return {group: round(seconds[group] / requests * 1e6, 1)
            for group in ("loyalty", "wrk") if group in seconds and requests}


def _twin_cpu_table(by_name: dict[str, dict[str, Any]]) -> list[str]:
    """Per twin leg: the throughputs, and loyalty's and wrk's CPU per request. wrk does the
    same work for a request of either route, so its CPU per request gauges how fast the
    machine was during each leg."""
    rows = []
    for route, twin in TWINS:
        rec = by_name.get(route, {})
        for leg, cpu in enumerate(rec.get("twin_cpu_legs") or [], start=1):
            suffix = LEG2 if leg == 2 else ""
            a, b = by_name.get(route + suffix, {}), by_name.get(twin + suffix, {})
            rows.append(
                f"| `{route}` ÷ `{twin}` | {leg} | {_fmt(a.get('throughput_rps'), 0)} / "
                f"{_fmt(b.get('throughput_rps'), 0)} | {_fmt(rec['twin_legs'][leg - 1], 3)} | "
                f"{_fmt(cpu['route'].get('loyalty'), 0)} / {_fmt(cpu['twin'].get('loyalty'), 0)}"
                f" | {_fmt(cpu['route'].get('wrk'), 0)} / {_fmt(cpu['twin'].get('wrk'), 0)} |")
    if not rows:
        return []
    return ["", "Each leg, with the CPU each request cost loyalty and wrk (µs). wrk does the "
            "same work for a request of either route, so its CPU per request gauges the "
            "machine's speed during the leg: when it moves, loyalty's moves with it.", "",
            "| pair | leg | throughput /s (route / twin) | ratio | loyalty µs/request | "
            "wrk µs/request |", "|---|---:|---:|---:|---:|---:|", *rows]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _other(rec: dict[str, Any]) -> str:
    other = rec.get("other_cpu_pct")
    mark = " ⚠" if other is not None and other > NOISY_OTHER_PCT else ""
    return f"{_fmt(other)} %{mark}"


def _met(flag: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "-"}[flag]


def _broker_warmup(durations: dict[str, Any]) -> str:
    """The header's sentence on the brokers' warm-up (absent from runs before it existed)."""
    requests = durations.get("broker_warmup_requests")
    if requests is None:
        return ""
    if not requests:
        return " Kafka's brokers were measured cold (no warm-up)."
    return (f" Before seeding, the new brokers' JVMs were warmed up with {requests:,} "
            f"`acks=all` produce requests ({durations['broker_warmup_s']:g} s, a topic of "
            "their own, deleted afterwards).")


def _autogroup(machine: dict[str, Any]) -> str:
    """The kernel's autogroup scheduling, when known (each service and wrk run in a session of
    their own either way)."""
    state = machine.get("sched_autogroup")
    return "" if state is None else f" (autogroup scheduling {'on' if state else 'off'})"


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    machine = meta["machine"]
    records = document["scenarios"]
    lines = [
        f"# Benchmark results ({meta['mode']} mode, {meta['started_at']})",
        "",
        f"Machine: {machine['cpus']} x {machine['cpu_model']}, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}{_autogroup(machine)}, Python {machine['python']}, "
        f"PostgreSQL {meta['versions']['postgres']}, {meta['versions']['wrk']}. "
        f"Revision `{meta.get('git')}`.",
        "",
        f"Load average before / after: {meta['load_average_before']} / "
        f"{meta['load_average_after']}. The load generator, PostgreSQL, Kafka and both services "
        "share these cores, and so does anything else running on the machine (the "
        "**other CPU** column): numbers from a busy machine are noisy — compare ratios from the "
        "same run rather than absolute figures across runs.",
        "",
        f"Deployment: {meta['deployment']['processes']}; {meta['deployment']['database']}; "
        f"events on {meta['deployment']['events']}. "
        f"Argon2id m={meta['deployment']['argon2']['memory_kib']} KiB, "
        f"t={meta['deployment']['argon2']['time_cost']}, "
        f"p={meta['deployment']['argon2']['parallelism']}. Seed: "
        f"{meta['seed']['users']:,} users with accounts. Each measurement: "
        f"{meta['durations']['measure_s']:g} s after {meta['durations']['warmup_s']:g} s of "
        f"warm-up.{_broker_warmup(meta['durations'])}",
        "",
    ]
    overrides = meta["deployment"].get("env_overrides") or {}
    if overrides:
        lines += ["**Not the production configuration:** the services ran with "
                  + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + ".", ""]
    lines += [
        "## Targets",
        "",
        "| target | value | threshold | result |",
        "|---|---:|---:|---|",
    ]
    for t in document.get("targets", []):
        lines.append(f"| {t['target']} | {_fmt(t['value'], 3)} {t['unit']} | "
                     f"{_fmt(t['threshold'])} {t['unit']} | {_met(t['met'])} |")
    by_name = _by_name(document)
    legs = [f"`{route}` ÷ `{twin}` {' then '.join(_fmt(v, 3) for v in rec['twin_legs'])}, "
            f"{_fmt(rec['ratios'][twin], 3)} over both"
            for route, twin in TWINS if (rec := by_name.get(route, {})).get("twin_legs")]
    if legs:
        lines += ["", "The twin ratios come from an A B B A measurement (the `/me` route, the "
                  "original's, the original's again, the `/me` route again), over both legs: "
                  + "; ".join(legs) + ".", *_twin_cpu_table(by_name)]
    lines += [
        "",
        "## Scenarios",
        "",
        "Throughput in requests (operations) per second; latency in ms as seen by the load "
        "generator; **ratio** = throughput ÷ the ceiling's throughput (logout: worst delay ÷ "
        "the 1 s deadline, lower is better). Generator and other CPU: share of the whole "
        "machine's capacity during the measurement.",
        "",
        "| scenario | request | conns | throughput /s | p50 | p90 | p99 | max | errors | "
        "ceiling | ratio | generator CPU | other CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for rec in records:
        if rec["kind"] == "ceiling":
            continue
        lat = rec.get("latency_ms") or {}
        ratio_text = _fmt(rec.get("ratio"), 3)
        extra = [f"{_fmt(v, 3)} x {k}" for k, v in (rec.get("ratios") or {}).items()
                 if k != rec.get("ceiling")]
        if extra:
            ratio_text += " (" + ", ".join(extra) + ")"
        lines.append(
            f"| {rec['title']} | `{rec.get('request', '')}` | {_fmt(rec.get('connections'))} | "
            f"{_fmt(rec['throughput_rps'])} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} | "
            f"{_fmt(lat.get('p99'))} | {_fmt(lat.get('max'))} | {_fmt(rec['errors'])} | "
            f"{rec.get('ceiling') or '-'} | {ratio_text} | "
            f"{_fmt(rec.get('generator_cpu_pct'))} % | {_other(rec)} |")
    lines += [
        "",
        f"⚠ = more than {NOISY_OTHER_PCT:g} % of the machine went to processes outside the "
        "benchmark during that measurement (a noisy figure).",
        "",
        "For the two event scenarios the latency columns are the **delay** (registration: "
        "201 → first 200 at `GET /loyalty/me`; logout: 200 → first 401 at `GET /loyalty/me`), "
        "and throughput is registrations / logouts per second at the driver's concurrency "
        "(the Python driver is not a throughput generator). Their request latencies:",
        "",
        "| scenario | operations | request p50 | p90 | p99 | max | polls | "
        "delays > 100 ms | > 500 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in records:
        if rec["generator"] != "python":
            continue
        lat = rec.get("request_latency_ms") or {}
        samples = rec.get("delay_samples_ms") or []
        lines.append(f"| {rec['title']} | {_fmt(rec['requests'])} | {_fmt(lat.get('p50'))} | "
                     f"{_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | "
                     f"{_fmt(lat.get('max'))} | {_fmt(rec.get('polls'))} | "
                     f"{sum(1 for d in samples if d > 100)} | "
                     f"{sum(1 for d in samples if d > 500)} |")
    per_replica = [r for r in records if r.get("per_replica_delay_ms")]
    if per_replica:
        lines += ["", "Logout → 401 per loyalty replica (each replica's own delay, ms):", "",
                  "| scenario | replica | logouts | p50 | p99 | max |",
                  "|---|---|---:|---:|---:|---:|"]
        for rec in per_replica:
            for replica, lat in rec["per_replica_delay_ms"].items():
                lines.append(f"| {rec['name']} | {replica} | {_fmt(lat.get('count'))} | "
                             f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} | "
                             f"{_fmt(lat.get('max'))} |")
    paths = [r for r in records if r.get("event_path")]
    if paths:
        lines += [
            "", "Where the bonus delay went, from the services' own `/metrics` during the "
            "measurement: sso's `authloyalty_outbox_delivery_seconds` (the registration's commit "
            "→ the broker's acknowledgement: the relay's claim, the produce, `acks=all` "
            "replication) and loyalty's `authloyalty_event_apply_seconds` (the record produced "
            "→ the bonus committed: replication until consumers may read it, the fetch, the "
            "handler's transaction). The rest of the delay is the 201 reaching the driver and "
            "its next poll.", "",
            "| scenario | stage | events | mean ms | ≤ 10 ms | ≤ 25 ms | ≤ 50 ms |",
            "|---|---|---:|---:|---:|---:|---:|"]
        stages = {"outbox_delivery_seconds": "commit → acknowledged",
                  "event_apply_seconds": "produced → bonus committed"}
        for rec in paths:
            for metric, stage in stages.items():
                row = rec["event_path"].get(metric)
                if row:
                    within = row["within_ms"]
                    lines.append(f"| {rec['name']} | {stage} | {row['events']} | "
                                 f"{_fmt(row['mean_ms'])} | {within['10']} | {within['25']} | "
                                 f"{within['50']} |")
    timed = [r for r in records if (r.get("tails") or {}).get("server_requests")]
    if timed:
        lines += [
            "",
            "Where the tail went, from the services' own `/metrics` during each measurement "
            "(summed over the processes): how many requests the **server** timed above "
            "10 / 25 / 100 ms (from the moment the application got the request), and how many "
            "of the event loop's wake-ups (every 0.1 s per process) came more than "
            "10 / 50 / 100 ms late (a stalled loop: every request in flight waited). Slow "
            "requests at wrk that neither shows waited outside the application: in the "
            "kernel's queues between wrk and the process.",
            "",
            "| scenario | route | requests (server) | > 10 ms | > 25 ms | > 100 ms | "
            "loop wake-ups | late > 10 ms | > 50 ms | > 100 ms | wrk p99 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for rec in timed:
            t = rec["tails"]
            slow, late = t.get("server_slow", {}), t.get("loop_late", {})
            lines.append(
                f"| {rec['name']} | `{t['server_route']}` | {_fmt(t['server_requests'])} | "
                f"{_fmt(slow.get('10'))} | {_fmt(slow.get('25'))} | {_fmt(slow.get('100'))} | "
                f"{_fmt(t.get('loop_wakeups'))} | {_fmt(late.get('10'))} | "
                f"{_fmt(late.get('50'))} | {_fmt(late.get('100'))} | "
                f"{_fmt((rec.get('latency_ms') or {}).get('p99'))} |")
    shared = [r for r in records if r.get("coalesced")]
    if shared:
        lines += [
            "",
            "Statements per request: loyalty serves the balance reads, and the movements "
            "without Idempotency-Key, that arrive in the same event-loop turn with one "
            "statement (`platform/batching.py`); pgbench's ceilings send that statement for "
            "one request at a time. From the services' `authloyalty_coalesced_batch_size` "
            "histogram during each measurement:",
            "",
            "| scenario | operation | requests | statements | requests per statement |",
            "|---|---|---:|---:|---:|",
        ]
        for rec in shared:
            for operation, c in rec["coalesced"].items():
                lines.append(f"| {rec['name']} | {operation} | {_fmt(c['requests'])} | "
                             f"{_fmt(c['statements'])} | {_fmt(c['mean_batch'], 2)} |")
    login = next((r for r in records if r["name"] == "login"), None)
    if login:
        lines += ["", f"Logins: {_fmt(login['throughput_rps'])}/s = "
                  f"{_fmt(login.get('logins_per_core'))}/s per core; "
                  f"{_fmt(login.get('logins_per_sso_cpu_second'))} logins per CPU-second of "
                  "the sso process."]
    lines += [
        "",
        "## Ceilings",
        "",
        "| ceiling | what | conns | throughput /s | p50 | p90 | p99 | max | errors | "
        "generator CPU | other CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in records:
        if rec["kind"] != "ceiling":
            continue
        lat = rec.get("latency_ms") or {}
        lines.append(
            f"| {rec['name']} | {rec['title']} (`{rec.get('request', '')}`) | "
            f"{_fmt(rec.get('connections'))} | {_fmt(rec['throughput_rps'])} | "
            f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | "
            f"{_fmt(lat.get('max'))} | {_fmt(rec['errors'])} | "
            f"{_fmt(rec.get('generator_cpu_pct'))} % | {_other(rec)} |")
    bare = next((r for r in records if r["name"] == "ceiling_bare_loyalty"), None)
    if bare and bare.get("ratio") is not None:
        lines += ["", f"Bare endpoint ÷ Go net/http: {_fmt(bare['ratio'], 3)} x the "
                  f"throughput, {_fmt(bare.get('ratio_per_cpu_second'), 3)} x the requests per "
                  "CPU-second of the server process(es)."]
    groups = ["wrk", "pgbench", "argon2", "bench-driver", "sso", "loyalty", "go", "postgres",
              "kafka", "other"]
    lines += [
        "",
        "## Where the CPU went",
        "",
        f"Share of the machine ({machine['cpus']} cores = 100 %) per process group during each "
        "measurement; *idle* is what nobody used. bench-driver is the Python runner itself "
        "(it generates the event scenarios' load).",
        "",
        "| measurement | " + " | ".join(groups) + " | idle |",
        "|---|" + "---:|" * (len(groups) + 1),
    ]
    for rec in records:
        share = rec["cpu"]["share_pct"]
        idle = max(0.0, 100.0 - share.get("machine", 0.0))
        lines.append(f"| {rec['name']} | " + " | ".join(
            _fmt(share.get(g)) if share.get(g) else "·" for g in groups) + f" | {idle:.0f} |")
    check = meta.get("ledger_check") or {}
    lines += [
        "",
        "## Checks",
        "",
        f"Ledger after the run: {check.get('accounts', '-')} accounts, "
        f"{check.get('entries', '-')} entries, {check.get('mismatched', '-')} balances ≠ "
        f"sum of ledger, {check.get('negative', '-')} negative.",
    ]
    priming = meta.get("token_priming")
    if priming:
        reached = ("every loyalty process saw every one of the"
                   if priming.get("every_token_reached")
                   else "**not every process reached all** of the")
        lines.append(
            f"\nToken priming before the authenticated scenarios: {reached} "
            f"{_fmt(priming['users'])} seeded access tokens ({_fmt(priming['requests'])} "
            f"`GET /loyalty/me` in {_fmt(priming['duration_s'])} s over "
            f"{priming['processes']} processes, {_fmt(priming['errors'])} errors), so the "
            "scenarios measure clients reusing their tokens; a token's first use costs one "
            "signature check (below).")
    for name, shape in (meta.get("sql_check") or {}).items():
        verdict = ("same commands and words" if shape["match"]
                   else f"**MISMATCH: update bench/sql/**, words: {shape.get('words')}")
        lines.append(f"\nSQL of one {name} request: the service sent "
                     f"{' -> '.join(shape['service']) or '?'}; pgbench runs "
                     f"{' -> '.join(shape['pgbench'])} ({verdict}).")
    algorithms = meta.get("token_algorithms") or []
    if algorithms:
        lines += [
            "",
            "## Token signatures",
            "",
            "The project's `TokenIssuer` / `TokenVerifier` (PyJWT on `cryptography`), one core, "
            "in the runner's process. sso signs a pair per login and refresh; loyalty verifies "
            "an access token the first time a process sees it, then remembers it until it "
            "expires.",
            "",
            "| algorithm | sign a pair (µs) | verify (µs) | verifies/s | access token bytes |",
            "|---|---:|---:|---:|---:|",
        ]
        for t in algorithms:
            lines.append(f"| {t['algorithm']} | {_fmt(t['sign_pair_us'])} | "
                         f"{_fmt(t['verify_us'])} | {_fmt(t['verifies_per_s'])} | "
                         f"{_fmt(t['token_bytes'])} |")
    if meta.get("failed"):
        lines += ["", f"**The run failed:** `{meta['failed']}`"]
    lines += [
        "",
        "## Charts",
        "",
        "![throughput](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
        "![cpu](cpu.png)",
        "",
    ]
    return "\n".join(lines)


# -- charts -------------------------------------------------------------------------------------


def charts(document: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _by_name(document)
    written = []
    title = f"authloyalty bench ({document['meta']['mode']}, {document['meta']['started_at']})"

    # Throughput: each scenario next to its ceiling, log scale.
    pairs = [(name, CEILINGS[name][0]) for name in CEILINGS if name in records]
    fig, ax = plt.subplots(figsize=(10, 0.9 * max(3, len(pairs)) + 1.5))
    labels, values, colors = [], [], []
    for name, ceiling in pairs:
        rec, top = records[name], records.get(ceiling)
        if top is not None:
            labels.append(f"ceiling: {top['name'].removeprefix('ceiling_')}")
            values.append(top["throughput_rps"])
            colors.append("#bbbbbb")
        ratio = rec.get("ratio")
        labels.append(f"{name}" + (f"  ({ratio:.2f}x)" if ratio is not None else ""))
        values.append(rec["throughput_rps"])
        colors.append("#1f77b4")
    for name in ("registration_bonus", "logout_refusal"):
        if name in records:
            labels.append(f"{name} (driver)")
            values.append(records[name]["throughput_rps"])
            colors.append("#2ca02c")
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    ax.set_xscale("log")
    ax.set_xlabel("requests per second (log scale)")
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:,.0f}", va="center", fontsize=8)
    ax.set_title(f"Throughput vs ceiling — {title}", fontsize=10)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # Latency percentiles per scenario (ceilings included where they have them).
    recs = [r for r in document["scenarios"] if (r.get("latency_ms") or {}).get("p50")]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.27
    for i, (pct, color) in enumerate((("p50", "#1f77b4"), ("p90", "#ff7f0e"),
                                      ("p99", "#d62728"))):
        xs = [j + (i - 1) * width for j in range(len(recs))]
        ax.bar(xs, [r["latency_ms"][pct] for r in recs], width, label=pct, color=color)
    ax.set_xticks(range(len(recs)),
                  [r["name"].replace("ceiling_", "ceil: ") for r in recs], rotation=30,
                  ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.legend()
    ax.set_title(f"Latency percentiles (event scenarios: delay) — {title}", fontsize=10)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # CPU shares, stacked.
    groups = [("wrk", "#9467bd"), ("pgbench", "#8c564b"), ("argon2", "#e377c2"),
              ("bench-driver", "#c5b0d5"), ("sso", "#1f77b4"), ("loyalty", "#2ca02c"),
              ("postgres", "#ff7f0e"), ("kafka", "#17becf"), ("other", "#7f7f7f")]
    recs = document["scenarios"]
    fig, ax = plt.subplots(figsize=(11, 5))
    bottoms = [0.0] * len(recs)
    for group, color in groups:
        vals = [r["cpu"]["share_pct"].get(group, 0.0) for r in recs]
        if not any(vals):
            continue
        ax.bar(range(len(recs)), vals, bottom=bottoms, label=group, color=color)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_xticks(range(len(recs)), [r["name"].replace("ceiling_", "ceil: ") for r in recs],
                  rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"% of the machine ({document['meta']['machine']['cpus']} cores)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"CPU share per process group — {title}", fontsize=10)
    fig.tight_layout()
    path = out / "cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write(document: dict[str, Any], out: Path) -> list[Path]:
    """latest.json, latest.md, charts, and timestamped copies of the JSON and Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = document["meta"]["started_at"].replace(":", "").replace("+0000", "Z")
    stamp = f"{stamp}-{document['meta']['mode']}"
    latest_json = out / "latest.json"
    latest_json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    latest_md = out / "latest.md"
    latest_md.write_text(markdown(document))
    paths = [latest_json, latest_md, *charts(document, out)]
    history = out / "history"
    history.mkdir(exist_ok=True)
    for path in (latest_json, latest_md):
        copy = history / f"{stamp}{path.suffix}"
        shutil.copyfile(path, copy)
        paths.append(copy)
    return paths
