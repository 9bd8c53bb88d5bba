"""The self-service key page: list, create (the key shown once) and revoke one's own tokens."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from channels_app.price_list import auto_route
from channels_app.routing import reachable_models
from groups.models import limits_label
from tokens import form_once
from tokens.forms import CreateTokenForm
from tokens.issuing import create_token, revoke
from tokens.models import Token
from tokens.quick_check import quick_check_model


def _keys_page(request, form):
    tokens = request.user.tokens.select_related("group").order_by("-created")
    posted_once = request.POST.get(form_once.FIELD, "")
    if not form_once.is_fresh(request, posted_once):
        posted_once = form_once.issue(request)
    context = {
        "form": form,
        "form_once": posted_once,
        "tokens": tokens,
        "default_group": request.user.group,
        "account_limits": limits_label(request.user.rate_limits()),
        "offers": form.offers,
        "not_offered": form.not_offered,
        "auto_route": auto_route(request.user),
    }
    return render(request, "pages/keys.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def keys(request):
    if request.method == "GET":
        return _keys_page(request, CreateTokenForm(owner=request.user))

    form = CreateTokenForm(request.POST, owner=request.user)
    if not form.is_valid():
        return _keys_page(request, form)
    if not form_once.spend(request, request.POST.get(form_once.FIELD, "")):
        messages.info(request, "That form was already submitted. A key is only shown once.")
        return redirect("keys")

    data = form.cleaned_data
    try:
        token, key = create_token(
            request.user,
            name=data["name"],
            group_name=data["group"],
            spend_limit=data["spend_limit"],
            expires_at=data["expires_at"],
            allowed_models=data["allowed_models"],
            rpm=data["rpm"],
            tpm=data["tpm"],
            max_concurrency=data["max_concurrency"],
        )
    except ValidationError as exc:
        form.add_error("group", exc.messages)
        return _keys_page(request, form)

    # Rendered in the POST response, never stored: the key exists only in this page.
    context = {
        "token": token,
        "key": key,
        "base_url": request.build_absolute_uri("/v1"),
        "models": reachable_models(token),
        "example_model": quick_check_model(token),
    }
    return render(request, "pages/key_created.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def revoke_key(request, token_id):
    token = get_object_or_404(
        Token.objects.select_related("group"), pk=token_id, owner=request.user
    )
    if request.method == "POST":
        if revoke(Token.objects.filter(pk=token.pk)):
            messages.success(request, f"Revoked “{token.name or token.key_prefix}”.")
        else:
            messages.info(request, "That key was already revoked.")
        return redirect("keys")
    return render(request, "pages/key_revoke.html", {"token": token})
