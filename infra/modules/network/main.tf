# The network the daemon's Fargate tasks run in. They only ever open connections
# outward (GHCR, formulae.brew.sh, S3, SQS, Secrets Manager, Slack), so by default
# they sit in public subnets with a public IP and a security group that admits
# nothing inbound: no NAT gateway to pay for while the service is scaled to zero.
# S3 traffic, the bulk of the bytes, goes through a free gateway endpoint either way.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394: the subnets take the first az_count zones in name order; a zone AWS adds sorts after the existing ones, so the zones in use do not change.
  state = "available"
}

data "aws_region" "current" {}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # One /24 per subnet: public ones from the bottom of the range, private ones from the
  # middle (10.42.0.0/24, 10.42.1.0/24 … and 10.42.128.0/24 … for a /16).
  newbits      = 24 - tonumber(split("/", var.cidr_block)[1])
  private_base = pow(2, local.newbits - 1)
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11: flow logs cost more than the rest of the idle stack; the only traffic is the tasks' own outbound HTTPS, and there is no inbound path to audit.
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

# Take every rule away from the VPC's default security group: nothing may use it.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-default-unused" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = var.az_count

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, local.newbits, count.index)
  # The ECS service asks for a public IP per task; nothing else lands here.
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = var.az_count

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# --- private subnets behind one NAT gateway (use_nat_gateway = true) ---------------

resource "aws_subnet" "private" {
  count = var.use_nat_gateway ? var.az_count : 0

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.cidr_block, local.newbits, local.private_base + count.index)
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_eip" "nat" {
  count = var.use_nat_gateway ? 1 : 0

  domain = "vpc"

  tags = merge(var.tags, { Name = "${var.name}-nat" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = var.use_nat_gateway ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_route_table" "private" {
  count = var.use_nat_gateway ? 1 : 0

  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route" "private_nat" {
  count = var.use_nat_gateway ? 1 : 0

  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_route_table_association" "private" {
  count = var.use_nat_gateway ? var.az_count : 0

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}

# --- S3 without NAT charges, and the tasks' security group -------------------------

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat([aws_route_table.public.id], aws_route_table.private[*].id)

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}

resource "aws_security_group" "this" {
  #checkov:skip=CKV2_AWS_5: attached to the daemon's ECS service (modules/ecs, network_configuration), through this module's security_group_id output; checkov does not follow it across modules.
  name        = "${var.name}-tasks"
  description = "mirrord tasks: no inbound; outbound HTTPS only"
  vpc_id      = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-tasks" })
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS to GHCR, formulae.brew.sh, Slack and the AWS APIs (S3 via the gateway endpoint)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
