"""``python -m rationalrewards.testing.judges --judge NAME``: a stand-alone scripted server serving
one registered judge (benchmarks run it in its own process to measure the server's CPU apart from
the client's). The other options are those of ``python -m rationalrewards.testing.scripted_server``.
"""

from __future__ import annotations

from ..scripted_server import arg_parser, serve_until_signalled
from . import judge, judge_names


def main(argv: list[str] | None = None) -> int:
    names = judge_names()
    parser = arg_parser()
    parser.add_argument("--judge", default="released", choices=sorted(names),
                        help="; ".join(f"{name}: {text}" for name, text in names.items()))
    args = parser.parse_args(argv)
    return serve_until_signalled(args, judge(args.judge))


if __name__ == "__main__":
    raise SystemExit(main())
