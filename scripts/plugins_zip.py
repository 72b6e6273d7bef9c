"""`make plugins-zip`: plugins.zip for MWAA (or any plugins folder): the plugin module, the
package with its templates, and the .airflowignore that keeps Airflow from loading the
package's modules as plugins. MWAA unpacks it into its plugins folder, which is on sys.path.

    python scripts/plugins_zip.py [OUT]     (default: plugins.zip)
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def members() -> list[Path]:
    package = [p for p in sorted((PLUGINS / "llmeval").rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return [PLUGINS / "llmeval_plugin.py", PLUGINS / ".airflowignore", *package]


def build(out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in members():
            archive.write(path, path.relative_to(PLUGINS).as_posix())
    return out


if __name__ == "__main__":
    written = build(Path(sys.argv[1] if len(sys.argv) > 1 else "plugins.zip"))
    print(f"wrote {written} ({len(members())} files)")
