#!/usr/bin/env python3
"""Django's command-line utility for the SuperBook demo."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "superbook.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
