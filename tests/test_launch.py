"""Launch settings validate themselves, as Cell does: a bad value is a ValueError naming the fix."""

from __future__ import annotations

import pytest

from bench.launch import Launch


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timeout_s": 0}, "timeout_s must be a number of seconds above 0"),
        ({"inactivity_timeout_s": -5.0}, "inactivity_timeout_s must be a number of seconds above 0"),
        ({"timeout_s": "60"}, "timeout_s must be a number of seconds above 0"),
        ({"rdzv_endpoint": "node1"}, "expected HOST:PORT"),
        ({"rdzv_endpoint": "node1:99999"}, "expected HOST:PORT"),
        ({"rdzv_id": ""}, "rdzv_id must not be empty"),
    ],
)
def test_bad_launch_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        Launch(**settings)


def test_good_launch_settings_are_kept():
    launch = Launch(timeout_s=60, inactivity_timeout_s=5.5, rdzv_endpoint="node1:29400")
    assert (launch.timeout_s, launch.inactivity_timeout_s, launch.rdzv_endpoint) == (60, 5.5, "node1:29400")
