from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets and alerts"

    def ready(self) -> None:
        # Ingestion (usage/) reports each batch's spend through usage.recording; budgets follow it.
        from usage.recording import spend_recorder_install

        from .spend import SpendRecording

        spend_recorder_install(SpendRecording)
