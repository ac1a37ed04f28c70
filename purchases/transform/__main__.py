"""python -m purchases.transform parse | docs | build [dbt args]

`parse` writes the manifest Cosmos renders the DAG from (run before the DAG processor starts: `make up`, the
Airflow image's build); `docs` regenerates the dbt docs page; `build` runs `dbt build` once.
"""

import argparse
import sys

from purchases.transform.docs import generate_docs
from purchases.transform.project import parse_project, run_dbt

parser = argparse.ArgumentParser(prog="python -m purchases.transform", description=__doc__.split("\n\n")[0])
parser.add_argument("command", choices=["parse", "docs", "build"])
parser.add_argument("dbt_args", nargs=argparse.REMAINDER, help="extra arguments for `build`, e.g. --vars '{...}'")
args = parser.parse_args()
if args.command == "parse":
    print(parse_project())
elif args.command == "docs":
    print(generate_docs())
else:
    result = run_dbt("build", *args.dbt_args, check=False)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    sys.exit(result.returncode)
