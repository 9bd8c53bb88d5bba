from django.urls import path, re_path

from airouter.relay import views

urlpatterns = [
    path("chat/completions", views.ProxyView.as_view(endpoint="chat/completions")),
    path("completions", views.ProxyView.as_view(endpoint="completions")),
    path("embeddings", views.ProxyView.as_view(endpoint="embeddings")),
    path("messages", views.ProxyView.as_view(endpoint="messages")),
    path("messages/count_tokens", views.CountTokensView.as_view()),
    path("responses", views.ProxyView.as_view(endpoint="responses")),
    path("models", views.ModelListView.as_view()),
    path("models/<path:model>", views.ModelDetailView.as_view()),
    re_path(r"^.*$", views.unknown_path),  # every other /v1 path: the 404 envelope
]
