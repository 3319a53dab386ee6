from __future__ import annotations

import yaml

from deployments import ROOT, check_prefect_yaml


def test_prefect_yaml_points_at_real_flows():
    assert check_prefect_yaml() == []


def test_every_flow_is_deployed_without_schedules():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert names == {"paper-replay", "live-execution", "post-trade-analytics"}
    assert all("schedules" not in d for d in config["deployments"])


def test_check_reports_a_broken_entrypoint(tmp_path):
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n    entrypoint: flows/nope.py:nothing\n")
    problems = check_prefect_yaml(bad)
    assert len(problems) == 1 and problems[0].startswith("x:")
