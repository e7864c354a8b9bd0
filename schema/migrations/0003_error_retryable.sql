ALTER TABLE `blobs` ADD `error_retryable` integer;--> statement-breakpoint
ALTER TABLE `layers` ADD `error_retryable` integer;