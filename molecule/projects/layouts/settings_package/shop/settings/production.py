import os

from .base import *  # noqa: F403

DEBUG = False
SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "")
ALLOWED_HOSTS = ["shop.example.com"]
