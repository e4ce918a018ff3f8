"""Every installed plugin: a typo in its settings names the plugin's own keys
and the closest one (the installed plugins of the `all` env)."""

from __future__ import annotations

import pytest

import hasten
from hasten.engine import Trainer
from hasten.plugins import PUBLISHED_PLUGINS, installed_plugins

INSTALLED = sorted(name for name, info in installed_plugins().items() if info.plugin_class is not None)


def test_every_published_plugin_is_installed_here():
    assert set(PUBLISHED_PLUGINS) <= set(INSTALLED)


@pytest.mark.parametrize("name", INSTALLED)
def test_typo_in_plugin_settings_lists_that_plugins_keys(name, tiny_config):
    settings = installed_plugins()[name].plugin_class.Settings  # type: ignore[union-attr]
    keys = sorted(settings.model_fields)
    if not keys:
        pytest.skip(f"{name} has no settings")
    key = max(keys, key=len)
    typo = key[:-1] + key[-1] * 2
    with pytest.raises(hasten.UserError) as info:
        Trainer(tiny_config(plugins={name: {typo: 1}}))
    message = str(info.value)
    assert f"plugins.{name}.{typo}: unknown key in plugins.{name} (did you mean {key!r}?)" in message
    assert f"allowed: {', '.join(keys)}" in message
