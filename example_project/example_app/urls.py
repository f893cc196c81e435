"""The example app's own endpoints, mounted under ``demo/`` by the project's urls."""

from django.urls import path

from . import views

urlpatterns = [path("webhook/", views.webhook, name="demo-webhook")]
