// CloudFront Function (cloudfront-js-2.0), viewer request, on every cache behaviour:
// the request passes only with a token whose SHA-256 is one of TOKEN_HASHES.
// The token travels either as
//   Authorization: Bearer <token>   brew sends it on every v2/ request (manifests and
//                                    blobs) when HOMEBREW_DOCKER_REGISTRY_TOKEN=<token>
//   X-Mirror-Token: <token>          for api/ (brew's API fetches send no Authorization):
//                                    a `header = "X-Mirror-Token: <token>"` line in the
//                                    file HOMEBREW_CURLRC names
// Only the hashes are in this code (and so in plans, state and DescribeFunction); the
// token itself is never in Terraform. Rendered by Terraform: TOKEN_HASHES is a JSON list.
var crypto = require('crypto');
var TOKEN_HASHES = ${token_hashes};

function sha256(text) {
  return crypto.createHash('sha256').update(text).digest('hex');
}

function allowed(token) {
  return token.length > 0 && TOKEN_HASHES.indexOf(sha256(token)) !== -1;
}

function handler(event) {
  var headers = event.request.headers;
  var auth = headers.authorization ? headers.authorization.value : '';
  var bearer = auth.indexOf('Bearer ') === 0 ? auth.substring(7).trim() : '';
  var custom = headers['x-mirror-token'] ? headers['x-mirror-token'].value.trim() : '';
  if (allowed(bearer) || allowed(custom)) {
    return event.request;
  }
  return {
    statusCode: 403,
    statusDescription: 'Forbidden',
    headers: { 'cache-control': { value: 'no-store' } },
  };
}
