output "environment" {
  description = "The environment this folder deploys."
  value       = var.environment

  # A tfvars file copied from another folder must not deploy over this one.
  precondition {
    condition     = var.environment == basename(abspath(path.root))
    error_message = "terraform.tfvars.json says environment = \"${var.environment}\", but this folder deploys \"${basename(abspath(path.root))}\"."
  }
}

output "mirrord" {
  description = "Everything the mirrord module outputs: bucket, queues, functions, service, logs, secret, alarms."
  value       = module.mirrord
}
