from django_supaqueue import task


@task
def status_changed(number: str, status: str) -> None:
    """The docs' trigger task; the tests only look at the jobs it gets."""
