from django.urls import path

from meshkit_testapp import views

handler404 = "meshkit.errors.handler404"
handler500 = "meshkit.errors.handler500"

urlpatterns = [
    path("items", views.create_item),
    path("items/<str:name>", views.items),
    path("boom", views.boom),
]
