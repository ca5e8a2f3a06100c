"""Provider webhooks: SendGrid, Mailgun, Amazon SES (via SNS) and a generic signed JSON format."""
