"""Where the tests find the project's files: the repository root, the IR examples, golden outputs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "grammar" / "examples"
GOLDEN = ROOT / "tests" / "golden"
