"""A Hub id is only tried when the Hub answers or the cache holds it: offline, it fails at once in one line."""

from __future__ import annotations

import pytest

from bwsk.errors import SourceError
from bwsk.frontend import hugging_face


def test_an_uncached_hub_id_fails_at_once_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.setattr(hugging_face, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", lambda *a, **k: pytest.fail("transformers was asked"))
    with pytest.raises(SourceError, match="Hub is unreachable"):
        hugging_face.load_hub("nobody-here/no-such-model")


def test_an_unresolvable_endpoint_is_unreachable(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.invalid")
    assert hugging_face.hub_reachable(timeout=1.0) is False
