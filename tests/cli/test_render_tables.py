"""proxy-status states from /debug/syncz entries, and config-dump sections picked exactly."""

from __future__ import annotations

from waymesh.cli.render_tables import _dump_section, sync_state


def test_sync_states() -> None:
    assert sync_state({}) == "NOT SENT"
    assert sync_state({"sent_version": "a", "acked_version": "a"}) == "SYNCED"
    assert sync_state({"sent_version": "b", "acked_version": "a"}) == "STALE"
    nacked = {"sent_version": "b", "acked_version": "a", "last_nack": {"version": "b", "message": "invalid regex"}}
    assert sync_state(nacked) == "NACKED: invalid regex"
    # A NACK of an older version no longer describes what was sent since.
    recovered = {"sent_version": "c", "acked_version": "c", "last_nack": {"version": "b", "message": "x"}}
    assert sync_state(recovered) == "SYNCED"


def test_sections_are_matched_by_exact_message_name() -> None:
    dump = {
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [1]},
        ]
    }
    assert _dump_section(dump, "RoutesConfigDump") == dump["configs"][1]
