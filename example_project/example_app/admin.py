"""The example's models in the admin, next to the queue's own screens."""

from django.contrib import admin

from .models import Order, WarehouseSync


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["number", "email", "status", "created_at", "confirmed_at"]
    list_filter = ["status"]
    search_fields = ["number", "email"]


@admin.register(WarehouseSync)
class WarehouseSyncAdmin(admin.ModelAdmin):
    list_display = ["name", "calls", "synced_at"]
