"""The read-only web dashboard of `mentionsync serve`: the archive's health and
the brand's visibility, behind DASHBOARD_TOKEN (worker/dashboard/app.py)."""
