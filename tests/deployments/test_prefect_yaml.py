from __future__ import annotations

import copy

import yaml

from deployments import ROOT, SCHEDULED, SIGNAL_EVENT, check_prefect_yaml


def deployments() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in config["deployments"]}


def test_prefect_yaml_points_at_real_flows():
    assert check_prefect_yaml() == []


def test_only_the_operational_deployments_carry_schedules():
    deps = deployments()
    assert set(deps) == {"paper-replay", "live-execution", "post-trade-analytics", "risk-monitor", "replay-sweep"}
    assert {n for n, d in deps.items() if "schedules" in d} == SCHEDULED
    assert deps["post-trade-analytics"]["schedules"] == [{"cron": "15 0 * * *", "timezone": "UTC"}]
    assert deps["risk-monitor"]["schedules"] == [{"interval": 60}]
    assert all(d["work_pool"]["name"] == "tradpal" for d in deps.values())


def test_live_execution_is_triggered_by_the_signal_event_with_the_payload_as_its_signal():
    [trigger] = deployments()["live-execution"]["triggers"]
    assert trigger["expect"] == [SIGNAL_EVENT] and trigger["match"] == {"prefect.resource.id": "tradpal.signal.*"}
    assert trigger["parameters"]["signals"]["value"]["template"] == "[{{ event.payload | tojson }}]"


def test_the_trigger_survives_prefect_deploy_loading_and_renders_the_payload_as_a_dict():
    """Prefect's own code: what `prefect deploy` does to the yaml on load (env templating,
    which drops list-item templates), then the RunDeployment action's rendering."""
    import os

    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate
    from prefect.utilities.templating import apply_values

    loaded = apply_values(copy.deepcopy(deployments()["live-execution"]), os.environ, remove_notset=False)
    params = loaded["triggers"][0]["parameters"]
    assert params == deployments()["live-execution"]["triggers"][0]["parameters"]
    RunDeployment._upgrade_v1_templates(params)
    payload = {"signal_id": "s-1", "symbol": "BTC/USDT", "side": "buy", "quantity": 0.01, "reference_price": 100.0}
    rendered = hydrate(params, HydrationContext(render_jinja=True, jinja_context={"event": {"payload": payload}}))
    assert rendered == {"signals": [payload]}


def test_check_reports_a_broken_entrypoint(tmp_path):
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n    entrypoint: flows/nope.py:nothing\n")
    problems = check_prefect_yaml(bad)
    assert len(problems) == 1 and problems[0].startswith("x:")


def test_check_reports_schedules_where_users_schedule_and_bad_trigger_parameters(tmp_path):
    deps = deployments()
    deps["paper-replay"]["schedules"] = [{"interval": 60}]
    del deps["risk-monitor"]["schedules"]
    deps["live-execution"]["triggers"][0]["parameters"] = {"signal": "{{ event.payload }}"}
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({"deployments": list(deps.values())}))
    assert sorted(check_prefect_yaml(path)) == [
        "live-execution: trigger passes unknown parameters ['signal']",
        "paper-replay: has schedules: (users schedule in the UI)",
        "risk-monitor: needs its schedule in the yaml",
    ]
