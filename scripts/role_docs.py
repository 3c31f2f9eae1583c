#!/usr/bin/env python3
"""Write the variable table of roles/<role>/README.md from its argument specs.

    scripts/role_docs.py common [redis ...]

The table goes between the markers <!-- BEGIN VARIABLES --> and <!-- END VARIABLES -->.
"""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- BEGIN VARIABLES -->", "<!-- END VARIABLES -->"


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(role: str) -> str:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, spec in specs["argument_specs"]["main"]["options"].items():
        kind = spec.get("type", "str")
        if spec.get("elements"):
            kind += f" of {spec['elements']}"
        if spec.get("choices"):
            kind += " (" + ", ".join(map(str, spec["choices"])) + ")"
        default = "**required**" if spec.get("required") else f"`{json.dumps(spec.get('default'))}`"
        description = spec.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        rows.append(f"| `{name}` | {cell(kind)} | {cell(default)} | {cell(description)} |")
    return "\n".join(rows)


def main(roles):
    for role in roles:
        readme = ROOT / "roles" / role / "README.md"
        text = readme.read_text()
        start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
        readme.write_text(text[:start] + "\n" + table(role) + "\n" + text[stop:])


if __name__ == "__main__":
    main(sys.argv[1:])
