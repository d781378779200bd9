"""Folder classification: priority, exclusions, special-use and localized names."""

from __future__ import annotations

from mailbridge.imap.models import ListEntry
from mailbridge.sync.discover import plan_folders


def entry(name, *flags, delimiter=".", special=None):
    return ListEntry(flags=tuple(flags), delimiter=delimiter, raw_name=name, name=name,
                     special_use=special, selectable="\\Noselect" not in flags and "\\NonExistent" not in flags)


def test_priority_and_default_exclusions():
    plans = {p.name: p for p in plan_folders([
        entry("INBOX"), entry("Sent Items"), entry("Papierkorb"), entry("Spam"),
        entry("Archive", "\\Archive", special="\\Archive"), entry("Gesendet.Alt"),
        entry("Lists", "\\Noselect"), entry("Ghost", "\\NonExistent"),
        entry("Mail/Junk", delimiter="/", special="\\Junk"),
    ])}
    assert set(plans) == {"INBOX", "Sent Items", "Papierkorb", "Spam", "Archive", "Gesendet.Alt", "Mail/Junk"}
    assert plans["INBOX"].is_priority and plans["Sent Items"].is_priority
    assert not plans["Archive"].is_priority and not plans["Gesendet.Alt"].is_priority
    assert plans["Papierkorb"].excluded and plans["Spam"].excluded and plans["Mail/Junk"].excluded
    assert not plans["Archive"].excluded


def test_special_use_attribute_wins_over_the_name():
    plans = {p.name: p for p in plan_folders([entry("Outbox-ish", special="\\Sent"), entry("Trash", special=None)])}
    assert plans["Outbox-ish"].is_priority and plans["Outbox-ish"].special_use == "\\Sent"
    assert plans["Trash"].excluded


def test_account_exclusions_replace_the_defaults():
    plans = {p.name: p for p in plan_folders([entry("INBOX"), entry("Trash"), entry("Newsletters")],
                                             excluded_names=["newsletters"])}
    assert plans["Newsletters"].excluded and not plans["Trash"].excluded


def test_inbox_is_first():
    assert plan_folders([entry("b"), entry("inbox"), entry("Sent")])[0].name == "INBOX"
