// Starts Swagger UI on this service's own document (no inline script: the page's CSP has none).
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({
    url: "/schema/openapi.json",
    dom_id: "#reference",
    deepLinking: true,
    // No call to the public validator service: the page works on a closed network.
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
