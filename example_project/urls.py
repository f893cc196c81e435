from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("demo/", include("example_project.example_app.urls"))]
