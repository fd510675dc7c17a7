output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "public_subnet_ids" {
  description = "IDs of the public subnets."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets (empty without a NAT gateway)."
  value       = aws_subnet.private[*].id
}

output "task_subnet_ids" {
  description = "Where the tasks run: the private subnets with a NAT gateway, else the public ones."
  value       = var.use_nat_gateway ? aws_subnet.private[*].id : aws_subnet.public[*].id
}

output "assign_public_ip" {
  description = "Whether tasks need a public IP to reach the internet (true without a NAT gateway)."
  value       = !var.use_nat_gateway
}

output "security_group_id" {
  description = "The tasks' egress-only security group."
  value       = aws_security_group.this.id
}

output "s3_endpoint_id" {
  description = "ID of the S3 gateway endpoint."
  value       = aws_vpc_endpoint.s3.id
}
