from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email, validate_slug

from workspaces.services import workspace_create


class Command(BaseCommand):
    help = "Create a workspace (and its owner's user if needed); prints the workspace slug."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="Owner's e-mail address")
        parser.add_argument("--name", default="", help="Display name (default: the slug)")

    def handle(self, slug: str, owner: str, name: str, **options):
        try:
            validate_slug(slug)
            validate_email(owner)
        except ValidationError as exc:
            raise CommandError(f"{exc.messages[0]} (got slug={slug!r}, owner={owner!r})") from exc
        workspace = workspace_create(slug=slug, owner_email=owner, name=name)
        self.stdout.write(workspace.slug)
