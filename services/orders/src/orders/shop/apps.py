from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "orders.shop"
    label = "shop"
    verbose_name = "Orders"
