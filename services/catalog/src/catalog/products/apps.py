from django.apps import AppConfig


class ProductsConfig(AppConfig):
    name = "catalog.products"
    label = "products"
    verbose_name = "Products and stock"
