from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig


class CoordinationConfig(AppConfig):
    name = "coordination"
    verbose_name = "Coordination"
    default_auto_field = "django.db.models.BigAutoField"

    def import_models(self) -> None:
        # The models live in the core (coordination.core.models), not in coordination.models:
        # the app's folder holds the core and its doors side by side (docs/architecture.md).
        assert self.apps is not None
        self.models = self.apps.all_models[self.label]
        self.models_module = import_module(f"{self.name}.core.models")
