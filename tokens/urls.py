from django.urls import path

from tokens import views

urlpatterns = [
    path("", views.keys, name="keys"),
    path("<int:token_id>/revoke/", views.revoke_key, name="revoke-key"),
]
