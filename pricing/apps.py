from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class PricingConfig(AppConfig):
    name = "pricing"
    verbose_name = "Price books"

    def ready(self) -> None:
        # Not business logic: only tells this process's price-book cache to reload.
        from .models import PriceBook, PriceBookRate
        from .selectors import price_book_cache_clear

        for model in (PriceBook, PriceBookRate):
            post_save.connect(price_book_cache_clear, sender=model, dispatch_uid=f"pricebook-cache-{model.__name__}-save")
            post_delete.connect(price_book_cache_clear, sender=model, dispatch_uid=f"pricebook-cache-{model.__name__}-delete")
