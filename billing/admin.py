from django.contrib import admin
from django.db.models import Exists, OuterRef

from usage.models import UsageEvent

from .models import PriceBook, PriceBookRate


class PriceBookRateInline(admin.TabularInline):
    model = PriceBookRate
    extra = 0

    def has_change_permission(self, request, obj=None) -> bool:
        return PriceBookAdmin.is_editable(obj) and super().has_change_permission(request, obj)

    has_add_permission = lambda self, request, obj=None: PriceBookAdmin.is_editable(obj)  # noqa: E731
    has_delete_permission = has_change_permission


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    list_display = ["version", "effective_from", "composition_multiplier", "unit_rounding", "in_use"]
    inlines = [PriceBookRateInline]
    search_fields = ["notes"]

    @staticmethod
    def is_editable(book: PriceBook | None) -> bool:
        """A version that has priced events is history: publish a new version instead."""
        return book is None or not UsageEvent.objects.filter(price_book=book).exists()

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            used=Exists(UsageEvent.objects.filter(price_book=OuterRef("pk")))
        )

    @admin.display(boolean=True, description="has priced events")
    def in_use(self, book: PriceBook) -> bool:
        return book.used

    def has_change_permission(self, request, obj=None) -> bool:
        return self.is_editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.is_editable(obj) and super().has_delete_permission(request, obj)
