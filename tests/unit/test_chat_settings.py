"""Chat settings: remembered across runs, validated, overridable from the environment."""

import json

from z1mlx import locations
from z1mlx.chat.settings import ChatSettings, load_settings, remember, save_settings


def test_defaults_when_there_is_no_file(home):
    assert load_settings() == ChatSettings()


def test_saved_values_come_back(home):
    save_settings(ChatSettings(budget=512, answer_tokens=64, show_reasoning=True))
    assert load_settings() == ChatSettings(512, 64, True)
    assert json.loads(locations.settings_file().read_text())["budget"] == 512


def test_remember_changes_one_field(home):
    save_settings(ChatSettings(budget=512, answer_tokens=64))
    assert remember(budget=128) == ChatSettings(128, 64, False)
    assert load_settings().budget == 128


def test_damaged_or_wrong_values_fall_back_to_defaults(home):
    path = locations.settings_file()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_settings() == ChatSettings()
    path.write_text(json.dumps({"budget": -3, "answer_tokens": "many", "show_reasoning": "yes", "extra": 1}))
    assert load_settings() == ChatSettings()
    path.write_text(json.dumps({"budget": 10**9}))
    assert load_settings().budget == ChatSettings().budget


def test_environment_overrides_without_being_saved(home, monkeypatch):
    save_settings(ChatSettings(budget=512))
    monkeypatch.setenv("Z1MLX_CHAT_BUDGET", "64")
    monkeypatch.setenv("Z1MLX_CHAT_SHOW_REASONING", "true")
    assert load_settings() == ChatSettings(64, ChatSettings().answer_tokens, True)
    remember(answer_tokens=10)
    assert json.loads(locations.settings_file().read_text())["budget"] == 512


def test_unwritable_settings_are_ignored(home, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    save_settings(ChatSettings(budget=1), blocker / "settings.json")  # no exception
