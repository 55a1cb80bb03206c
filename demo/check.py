"""The demo's quality floor, for CI: read a demo's results.json and fail
when FCN-8s is not good enough or the skips do not pay.

    python -m demo.check runs/demo/results.json [--min-mean-iu 0.55] [--min-gain 0.10]

Exit 0 and one line when the floor holds; exit 1 and one line naming what
fell short otherwise; exit 2 when the file is missing or not a demo result.
"""
import argparse
import json
import sys

MIN_MEAN_IU = 0.55      # FCN-8s mean IU
MIN_GAIN = 0.10         # FCN-8s mean IU minus FCN-32s mean IU


def stage_mean_ius(results, path):
    """{stage: mean IU} of a demo results.json, or ValueError naming the problem."""
    stages = results.get("stages") if isinstance(results, dict) else None
    if not isinstance(stages, dict):
        raise ValueError(f"{path}: no 'stages' object; expected a `python -m demo` results.json")
    ius = {}
    for stage in ("fcn32s", "fcn8s"):
        value = (stages.get(stage) or {}).get("mean_iu")
        if not isinstance(value, (int, float)):
            raise ValueError(f"{path}: stages.{stage}.mean_iu missing or not a number")
        ius[stage] = float(value)
    return ius


def shortfalls(ius, min_mean_iu=MIN_MEAN_IU, min_gain=MIN_GAIN):
    """What falls under the floor, as sentences (empty when it holds)."""
    problems = []
    if not ius["fcn8s"] >= min_mean_iu:
        problems.append(f"FCN-8s mean IU {ius['fcn8s']:.3f} < {min_mean_iu:.2f}")
    gain = ius["fcn8s"] - ius["fcn32s"]
    if not gain >= min_gain:
        problems.append(f"FCN-8s beats FCN-32s ({ius['fcn32s']:.3f}) by {gain:+.3f} < {min_gain:.2f}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results.json written by `python -m demo`")
    parser.add_argument("--min-mean-iu", type=float, default=MIN_MEAN_IU)
    parser.add_argument("--min-gain", type=float, default=MIN_GAIN)
    args = parser.parse_args(argv)
    try:
        with open(args.results) as f:
            ius = stage_mean_ius(json.load(f), args.results)
    except OSError as exc:
        print(f"demo.check: error: cannot read {args.results}: {exc.strerror}", file=sys.stderr)
        return 2
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"demo.check: error: {exc}", file=sys.stderr)
        return 2
    problems = shortfalls(ius, args.min_mean_iu, args.min_gain)
    if problems:
        print("demo.check: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"demo.check: ok: FCN-8s mean IU {ius['fcn8s']:.3f} >= {args.min_mean_iu:.2f}, "
          f"{ius['fcn8s'] - ius['fcn32s']:+.3f} over FCN-32s (>= {args.min_gain:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
