from django.contrib import admin

from identity.tokens.models import LoginFailure, RefreshToken, ServiceClient, SigningKey


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    list_display = ("kid", "algorithm", "created_at", "retired_at", "publish_until")
    exclude = ("private_key",)
    readonly_fields = ("kid", "algorithm", "public_jwk", "created_at", "retired_at", "publish_until")


@admin.register(ServiceClient)
class ServiceClientAdmin(admin.ModelAdmin):
    list_display = ("client_id", "audiences", "scopes", "can_introspect", "active")
    exclude = ("secret_hash",)


@admin.register(RefreshToken)
class RefreshTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "family", "created_at", "expires_at", "used_at", "revoked_at")
    exclude = ("token_hash",)
    list_filter = ("revoked_at",)


@admin.register(LoginFailure)
class LoginFailureAdmin(admin.ModelAdmin):
    list_display = ("key", "at")
