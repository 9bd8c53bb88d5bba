from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "AI Router"
admin.site.site_title = "AI Router admin"
admin.site.index_title = "Operations"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/", include("airouter.relay.urls")),
]
