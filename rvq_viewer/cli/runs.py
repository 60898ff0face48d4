"""`rvq-viewer runs RUN_DIR [--json OUT] [--fail-on collapse]`: a monitored training run, headless.

Prints, per layer, the newest window's usage and the diagnosis over time (the step at which the layer
first met a collapse rule, and whether it recovered). `--fail-on` judges the newest window as `audit
--fail-on` judges an audit, so a scheduler can stop a collapsing run early (exit 3)."""

from __future__ import annotations

import json

from ..analysis.diagnosis import FAIL_ON, EXIT_COLLAPSE, exit_code_for, format_verdicts
from ..io import atomic_write_text, check_outputs
from ..pipeline import open_run


def register(sub) -> None:
    parser = sub.add_parser("runs", help="summaries of a training run recorded by rvq_viewer.monitor")
    parser.add_argument("run", help="run directory (or one rank's rvq-monitor.rank<R>.sqlite)")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write the windows and events to OUT")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="never",
                        help=f"exit with status {EXIT_COLLAPSE} when the newest window has a verdict of this "
                             "severity (to stop a collapsing run early)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    source = open_run(args.run)
    try:
        check_outputs([("--json", args.json_out)], source.files)
        if not source.windows:
            verdicts = []
        else:
            _, verdicts, _, _ = source.verdicts_at(len(source.windows) - 1)
        if args.json_out:
            atomic_write_text(args.json_out, json.dumps(source.to_dict(verdicts), allow_nan=False))
        print(source.describe())
        if source.drops:
            print(f"dropped: {sum(n for _, _, n, _ in source.drops)} window(s) the writer could not keep up with")
        if source.windows:
            last = source.windows[-1]
            print(f"{'layer':>5} {'used/K':>13} {'perplexity':>10} {'ema-dead':>8}  {'first collapse':>14}  recovered")
            for h in source.histories():
                i, k = h.layer, source.codebook_sizes[h.layer]
                ema = "-" if last.ema_dead[i] is None else str(last.ema_dead[i])
                first = "-" if h.first_collapse_step is None else f"step {h.first_collapse_step:,}"
                recovered = ("-" if h.first_collapse_step is None else "no (collapsed now)" if h.collapsed_now
                             else f"from step {h.recovered_step:,}")
                print(f"{i:>5} {f'{last.used[i]}/{k}':>13} {last.perplexity[i]:>10.1f} {ema:>8}  {first:>14}  {recovered}")
            print(f"newest window: steps {last.step_from:,}..{last.step_to:,}")
            print(format_verdicts(verdicts, "warning"))
        return exit_code_for(verdicts, args.fail_on)
    finally:
        source.close()
