from django.core.management.base import BaseCommand, CommandError

from workspaces.models import ALL_SCOPES, Workspace
from workspaces.services import InvalidScopes, api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for a workspace. The secret is printed alone on the last line of "
        "stdout and never stored in clear: keep it now."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes",
            nargs="+",
            default=None,
            metavar="SCOPE",
            help=f"Any of {', '.join(ALL_SCOPES)} (default: all)",
        )

    def handle(self, slug: str, name: str, scopes: list[str] | None, **options):
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            raise CommandError(
                f"No workspace '{slug}'. Create it first: manage.py create_workspace {slug} --owner EMAIL"
            )
        try:
            issued = api_key_create(workspace=workspace, name=name, scopes=scopes)
        except InvalidScopes as exc:
            raise CommandError(str(exc)) from exc
        key = issued.api_key
        self.stdout.write(f"Created key '{key.name}' ({key.display_prefix}) for {workspace.slug}")
        self.stdout.write(f"Scopes: {' '.join(key.scopes)}")
        self.stdout.write(issued.secret)
