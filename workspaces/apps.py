from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    verbose_name = "Workspaces and API keys"

    def ready(self) -> None:
        # Not business logic: a key saved in this process (revoked, new scopes, in the admin) is
        # forgotten by this process's key cache at once; other processes within a second.
        from .models import ApiKey
        from .services import key_cache_forget

        def forget(sender, instance, **kwargs) -> None:
            key_cache_forget(instance.prefix)

        post_save.connect(forget, sender=ApiKey, dispatch_uid="api-key-cache-save", weak=False)
        post_delete.connect(forget, sender=ApiKey, dispatch_uid="api-key-cache-delete", weak=False)
