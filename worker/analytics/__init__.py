"""Analytics over the archive: the views, reports, charts, export and reprocess.

The views themselves are created by Alembic (revision 0006); this package only
reads them, with SQL that groups and counts in the database.
"""
