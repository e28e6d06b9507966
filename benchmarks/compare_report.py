"""Markdown tables of a `benchmarks.reference_compare` result (the dict it writes as JSON), with issue 17's targets
printed next to each ratio. Pure formatting: `report(result)` regenerates README's table from a saved JSON."""

from __future__ import annotations

# (figure key, label, kind) in table order; kind "speed": reference s / ours s, "memory": ours MB / reference MB
FIGURES = (("g_step", "G step (fwd+bwd+AdamW)", "speed"), ("d_step", "D step (+gradient penalty)", "speed"),
           ("iteration", "**one training iteration (G + D)**", "speed"), ("tokenize", "**tokenize**", "speed"),
           ("decode", "**decode**", "speed"), ("rss", "**peak RSS, 3 G steps**", "memory"))
# issue 17's targets: figure -> (paper-style blocks, seed-sized); speed: at least this many times faster; memory: at
# most this fraction of the reference's peak
TARGETS = {"iteration": (3.0, 3.0), "tokenize": (1.5, 3.0), "decode": (1.5, 3.0), "rss": (0.5, 0.5)}
LIMIT_TARGET = 0.40  # tokenizer training at >= 40% of the measured conv3d limit
OURS = ("ours-paper", "ours-seed")
NAMES = {"reference": "reference 0.5.1", "ours-paper": "ours, paper blocks (default)",
         "ours-seed": "ours, seed-sized (`block_style=\"seed\"`)"}


def conv_limit(result: dict) -> float | None:
    """The machine's conv3d limit in GFLOP/s: the best fp32 rate (contiguous or channels-last) in our environment."""
    limits = result.get("limits", {}).get("ours", {}).get("limits")
    if not limits:
        return None
    return max(limits[k]["best_gflops"] for k in ("conv3d_fp32", "conv3d_fp32_channels_last"))


def _seconds(s: dict) -> str:
    return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, n={s['n']})"


def _value(side: dict, key: str) -> float | None:
    if key == "rss":
        return side.get("rss", {}).get("peak_rss_mb")
    s = side.get("seconds", {}).get(key)
    return s["median"] if s else None


def _cell(side: dict, key: str) -> str:
    if key == "rss":
        return f"{side['rss']['peak_rss_mb']:,.0f} MB" if "rss" in side else "-"
    return _seconds(side["seconds"][key]) if key in side.get("seconds", {}) else "-"


def _ratio(ref: float | None, ours: float | None, kind: str, target: float | None) -> str:
    if ref is None or ours is None:
        return "-"
    if kind == "speed":
        r = ref / ours
        text = f"{r:.2f}x faster" if r >= 1 else f"{r:.2f}x (slower)"
    else:
        r = ours / ref
        text = f"{r:.2f}x"
    if target is None:
        return text
    met = r >= target if kind == "speed" else r <= target
    return f"{text}; target {'>=' if kind == 'speed' else '<='} {target:g}x: {'met' if met else 'not met'}"


def tokenizer_table(result: dict) -> str:
    tok = result["tokenizer"]
    ref = tok.get("reference")
    cols = [impl for impl in ("reference", *OURS) if impl in tok]
    head = ["figure"] + [NAMES[c] for c in cols if c == "reference"]
    for c in cols:
        if c != "reference":
            head += [NAMES[c]] + (["vs reference"] if ref else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def params(side: dict) -> str:
        return f"{side['g_params'] / 1e6:.2f} M / {side['d_params'] / 1e6:.2f} M"

    row = ["generator / discriminator params"] + ([params(ref)] if ref else [])
    for c in cols:
        if c != "reference":
            row.append(params(tok[c]))
            if ref:
                row.append(f"{tok[c]['g_params'] / ref['g_params']:.2f}x / {tok[c]['d_params'] / ref['d_params']:.2f}x")
    lines.append("| " + " | ".join(row) + " |")
    for key, label, kind in FIGURES:
        row = [label] + ([_cell(ref, key)] if ref else [])
        for c in (c for c in cols if c != "reference"):
            row.append(_cell(tok[c], key))
            if ref:
                target = TARGETS.get(key, (None, None))[OURS.index(c)] if c in OURS else None
                row.append(_ratio(_value(ref, key), _value(tok[c], key), kind, target))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def flops_table(result: dict) -> str:
    tok, limit = result["tokenizer"], conv_limit(result)
    lines = ["| figure | model | GFLOP | median s | GFLOP/s | of the conv3d limit |", "|---|---|---|---|---|---|"]
    for key, label, kind in FIGURES:
        if kind != "speed":
            continue
        for impl, side in tok.items():
            if "flops" not in side or key not in side.get("seconds", {}):
                continue
            gflop, med = side["flops"][key] / 1e9, side["seconds"][key]["median"]
            rate = gflop / med
            frac = "-" if limit is None else f"{100 * rate / limit:.0f}%"
            if limit is not None and key == "iteration" and impl in OURS:
                met = "met" if rate / limit >= LIMIT_TARGET else "not met"
                frac += f" (target >= {100 * LIMIT_TARGET:.0f}%: {met})"
            lines.append(f"| {label.strip('*')} | {impl} | {gflop:.1f} | {med:.2f} | {rate:.1f} | {frac} |")
    return "\n".join(lines)


def limits_table(result: dict) -> str:
    lines = ["| probe | environment | input | best GFLOP/s | median GFLOP/s |", "|---|---|---|---|---|"]
    for env, got in result["limits"].items():
        for name, r in got["limits"].items():
            shape = "x".join(map(str, r["input"])) + f" {r['dtype']}" if "input" in r else "2048x2048 float32"
            lines.append(f"| {name} | {env} (torch {got['torch']}, {got['threads']} threads) | {shape} | "
                         f"{r['best_gflops']:.1f} | {r['median_gflops']:.1f} |")
    native = result["limits"].get("ours", {}).get("native_bf16")
    if native is False:
        lines.append("\nThis CPU has no AVX512-BF16 / AMX: torch emulates bf16 convs, so the bf16 probe ran at a "
                     "small size and is no limit for fp32 training.")
    return "\n".join(lines)


def header(result: dict) -> str:
    m = result["machine"]
    lines = [f"date {result['date']}; {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'}), {m['cores']} cores, "
             f"{m['threads']} torch threads per process; python {m['python']}",
             f"load average (1/5/15 min) before {_load(m['load_average_before'])}, after "
             f"{_load(m.get('load_average_after'))} (above {m['cores']}: other processes shared the cores; timings "
             f"are then noisy, compare within this run only)"]
    for impl, side in result.get("tokenizer", {}).items():
        v = ", ".join(f"{k} {val}" for k, val in side["versions"].items())
        lines.append(f"- {impl}: {v}; " + "; ".join(side["settings"]))
    c = result["config"]
    lines.append(f"- config: {c['image_size']}x{c['image_size']}, {c['frames']} frames, batch {c['batch']}, init_dim "
                 f"{c['init_dim']}, max_dim {c['max_dim']}, {c['codebook_size']:,} codes, AdamW lr {c['lr']:g} wd "
                 f"{c['weight_decay']:g}, layers {c['layers']}")
    if "wall_s" in result:
        lines.append(f"- wall time of these sections: {result['wall_s'] / 60:.1f} min")
    return "\n".join(lines)


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def report(result: dict) -> str:
    parts = ["## Side by side with magvit2-pytorch 0.5.1", header(result)]
    if "limits" in result:
        parts += ["### Machine limits", limits_table(result)]
    if "tokenizer" in result:
        parts += ["### Tokenizer (median s, min-max over interleaved repeats, n)", tokenizer_table(result),
                  "### FLOPs (torch.utils.flop_counter) and achieved rate", flops_table(result)]
    if "lfq" in result:
        from benchmarks.lfq_codes import lfq_table

        parts += [f"### LFQ loss (each probe may add at most {result['lfq']['cap_gb']:g} GB)",
                  lfq_table(result["lfq"]["rows"])]
    if "maskgit" in result:
        from benchmarks.maskgit_speed import maskgit_table

        parts += ["### MaskGit", maskgit_table(result["maskgit"], conv_limit(result))]
    return "\n\n".join(parts)
