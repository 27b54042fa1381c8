package dev.redrive.interop;

import java.io.IOException;
import java.lang.reflect.Method;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.EnableKafkaRetryTopic;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.core.ProducerFactory;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.retrytopic.DeadLetterPublishingRecovererFactory;
import org.springframework.kafka.retrytopic.RetryTopicConfiguration;
import org.springframework.kafka.retrytopic.RetryTopicConfigurationBuilder;
import org.springframework.kafka.retrytopic.RetryTopicHeaders;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.kafka.support.KafkaMessageHeaderAccessor;
import org.springframework.messaging.Message;
import org.springframework.messaging.handler.annotation.Header;
import org.springframework.messaging.support.MessageBuilder;
import org.springframework.scheduling.TaskScheduler;
import org.springframework.scheduling.concurrent.ThreadPoolTaskScheduler;
import org.springframework.util.backoff.BackOff;
import org.springframework.util.backoff.BackOffExecution;
import org.springframework.util.backoff.FixedBackOff;

/**
 * Spring Kafka's side of redrive's interoperability tests, against the broker named on the
 * command line. Every mode prints JSON lines on stdout; logs go to stderr.
 *
 * <pre>
 * dead-letter --bootstrap B --topic T --group G --key K --value V
 *     a @KafkaListener that throws, with a DefaultErrorHandler and a DeadLetterPublishingRecoverer:
 *     the classic dead letter in T-dlt
 * chain --bootstrap B --topic T --group G --key K --value V --delays 500,1000 --until T-dlt [--fail-retries false]
 *     a @KafkaListener that throws, with a retry-topic chain (RetryTopicConfigurationBuilder,
 *     topics T-retry-0.., T-dlt, suffixed by index, created by the caller); returns once --until has a record
 * read --bootstrap B --topics T1,T2 --count N
 *     a @KafkaListener that reads N records and prints what Spring's @Header conversions decode
 * </pre>
 */
public final class Main {

	static final Map<String, String> OPTS = new HashMap<>();

	static final List<Map<String, Object>> CALLS = new ArrayList<>();

	private Main() {
	}

	public static void main(String[] args) throws Exception {
		System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
		System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
		for (int i = 1; i + 1 < args.length; i += 2) {
			OPTS.put(args[i].replaceFirst("^--", ""), args[i + 1]);
		}
		OPTS.forEach((k, v) -> System.setProperty("interop." + k, v));
		int status = 0;
		try {
			switch (args[0]) {
				case "dead-letter" -> deadLetter();
				case "chain" -> chain();
				case "read" -> read();
				default -> throw new IllegalArgumentException("unknown mode " + args[0]);
			}
		}
		catch (Exception ex) {
			ex.printStackTrace();
			status = 1;
		}
		System.out.flush();
		System.exit(status);
	}

	static String opt(String name) {
		String v = OPTS.get(name);
		if (v == null) {
			throw new IllegalArgumentException("missing --" + name);
		}
		return v;
	}

	// -- the modes -----------------------------------------------------------------------------

	static void deadLetter() throws Exception {
		try (AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext(
				Common.class, ClassicConfig.class)) {
			produce(ctx, opt("topic"));
			waitFor(opt("topic") + "-dlt", 1, Duration.ofSeconds(60));
		}
		printCalls();
	}

	static void chain() throws Exception {
		try (AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext(
				Common.class, ChainConfig.class)) {
			produce(ctx, opt("topic"));
			waitFor(opt("until"), 1, Duration.ofSeconds(90));
		}
		printCalls();
	}

	static void read() throws Exception {
		try (AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext(
				Common.class, ReaderConfig.class)) {
			Reader reader = ctx.getBean(Reader.class);
			if (!reader.done.await(90, TimeUnit.SECONDS)) {
				throw new IllegalStateException("read " + reader.seen + " of " + opt("count") + " records");
			}
		}
	}

	@SuppressWarnings("unchecked")
	static void produce(AnnotationConfigApplicationContext ctx, String topic) throws Exception {
		KafkaTemplate<byte[], byte[]> template = ctx.getBean(KafkaTemplate.class);
		var sent = template.send(topic, bytes(opt("key")), bytes(opt("value"))).get(30, TimeUnit.SECONDS);
		Map<String, Object> m = new LinkedHashMap<>();
		m.put("event", "produced");
		m.put("topic", topic);
		m.put("partition", sent.getRecordMetadata().partition());
		m.put("offset", sent.getRecordMetadata().offset());
		m.put("timestamp", sent.getRecordMetadata().timestamp());
		print(m);
	}

	/** Wait until `topic` holds at least `count` records (a plain consumer, no group). */
	static void waitFor(String topic, int count, Duration timeout) {
		try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps(null))) {
			List<TopicPartition> tps = new ArrayList<>();
			for (PartitionInfo p : consumer.partitionsFor(topic)) {
				tps.add(new TopicPartition(topic, p.partition()));
			}
			consumer.assign(tps);
			consumer.seekToBeginning(tps);
			long deadline = System.nanoTime() + timeout.toNanos();
			int seen = 0;
			while (seen < count) {
				if (System.nanoTime() > deadline) {
					throw new IllegalStateException("no record in " + topic + " within " + timeout);
				}
				seen += consumer.poll(Duration.ofMillis(100)).count();
			}
		}
	}

	static synchronized void call(ConsumerRecord<byte[], byte[]> rec) {
		Map<String, Object> m = new LinkedHashMap<>();
		m.put("event", "call");
		m.put("topic", rec.topic());
		m.put("offset", rec.offset());
		m.put("at", System.currentTimeMillis());
		var attempts = rec.headers().lastHeader(RetryTopicHeaders.DEFAULT_HEADER_ATTEMPTS);
		m.put("attempts_header", attempts == null ? null : hex(attempts.value()));
		CALLS.add(m);
	}

	static synchronized void printCalls() {
		CALLS.forEach(Main::print);
	}

	static Exception failure(ConsumerRecord<byte[], byte[]> rec) {
		return new IllegalStateException("order " + new String(rec.value(), StandardCharsets.UTF_8)
				+ " is broken", new IOException("disk on fire"));
	}

	// -- Spring configuration ----------------------------------------------------------------

	static Map<String, Object> consumerProps(String group) {
		Map<String, Object> p = new HashMap<>();
		p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, opt("bootstrap"));
		p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
		p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
		p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
		p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 1000);
		if (group != null) {
			p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
		}
		return p;
	}

	@Configuration
	@EnableKafka
	@EnableKafkaRetryTopic
	public static class Common {

		@Bean
		public ProducerFactory<byte[], byte[]> producerFactory() {
			Map<String, Object> p = new HashMap<>();
			p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, opt("bootstrap"));
			p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
			p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
			p.put(ProducerConfig.ACKS_CONFIG, "all");
			return new DefaultKafkaProducerFactory<>(p);
		}

		@Bean
		public KafkaTemplate<byte[], byte[]> kafkaTemplate(ProducerFactory<byte[], byte[]> pf) {
			return new KafkaTemplate<>(pf);
		}

		@Bean
		public ConsumerFactory<byte[], byte[]> consumerFactory() {
			String group = OPTS.getOrDefault("group", "interop-" + UUID.randomUUID());
			return new DefaultKafkaConsumerFactory<>(consumerProps(group));
		}

		@Bean
		public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> kafkaListenerContainerFactory(
				ConsumerFactory<byte[], byte[]> cf) {
			ConcurrentKafkaListenerContainerFactory<byte[], byte[]> f = new ConcurrentKafkaListenerContainerFactory<>();
			f.setConsumerFactory(cf);
			f.getContainerProperties().setPollTimeout(200);
			return f;
		}

		@Bean
		public TaskScheduler taskScheduler() {
			return new ThreadPoolTaskScheduler();
		}

	}

	/** The classic path: a DefaultErrorHandler with Spring's DeadLetterPublishingRecoverer. */
	@Configuration
	public static class ClassicConfig {

		@Bean
		public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> classicFactory(
				ConsumerFactory<byte[], byte[]> cf, KafkaTemplate<byte[], byte[]> template) {
			ConcurrentKafkaListenerContainerFactory<byte[], byte[]> f = new ConcurrentKafkaListenerContainerFactory<>();
			f.setConsumerFactory(cf);
			f.getContainerProperties().setPollTimeout(200);
			f.setCommonErrorHandler(new DefaultErrorHandler(new DeadLetterPublishingRecoverer(template),
					new FixedBackOff(0L, 0L)));
			return f;
		}

		@Bean
		public ClassicListener classicListener() {
			return new ClassicListener();
		}

	}

	public static class ClassicListener {

		@KafkaListener(id = "classic", topics = "#{systemProperties['interop.topic']}",
				containerFactory = "classicFactory")
		public void on(ConsumerRecord<byte[], byte[]> rec) throws Exception {
			call(rec);
			throw failure(rec);
		}

	}

	/** The retry-topic chain: what @RetryableTopic sets up, through its builder. */
	@Configuration
	public static class ChainConfig {

		@Bean
		public RetryTopicConfiguration retryTopics(KafkaTemplate<byte[], byte[]> template) {
			long[] delays = Arrays.stream(opt("delays").split(",")).mapToLong(Long::parseLong).toArray();
			return RetryTopicConfigurationBuilder.newInstance()
					.maxAttempts(delays.length + 1)
					.customBackoff(new ListBackOff(delays))
					.suffixTopicsWithIndexValues()
					.doNotAutoCreateRetryTopics()
					.includeTopic(opt("topic"))
					.create(template);
		}

		@Bean
		public ChainListener chainListener() {
			return new ChainListener();
		}

	}

	public static class ChainListener {

		@KafkaListener(id = "chain", topics = "#{systemProperties['interop.topic']}")
		public void on(ConsumerRecord<byte[], byte[]> rec) throws Exception {
			call(rec);
			boolean failRetries = Boolean.parseBoolean(OPTS.getOrDefault("fail-retries", "true"));
			if (failRetries || rec.topic().equals(opt("topic"))) {
				throw failure(rec);
			}
		}

	}

	/** Given delays, one after the other (Spring's retry topics take one per retry). */
	record ListBackOff(long[] delays) implements BackOff {

		@Override
		public BackOffExecution start() {
			return new BackOffExecution() {
				private int next;

				@Override
				public long nextBackOff() {
					return this.next < delays.length ? delays[this.next++] : STOP;
				}
			};
		}

	}

	@Configuration
	public static class ReaderConfig {

		@Bean
		public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> readerFactory(
				ConsumerFactory<byte[], byte[]> cf) {
			ConcurrentKafkaListenerContainerFactory<byte[], byte[]> f = new ConcurrentKafkaListenerContainerFactory<>();
			f.setConsumerFactory(cf);
			f.getContainerProperties().setPollTimeout(200);
			// A header Spring cannot convert fails the call: report it as the record's result.
			f.setCommonErrorHandler(new DefaultErrorHandler((rec, ex) -> {
				Map<String, Object> m = new LinkedHashMap<>();
				m.put("topic", rec.topic());
				m.put("partition", rec.partition());
				m.put("offset", rec.offset());
				m.put("error", String.valueOf(ex.getCause() != null ? ex.getCause() : ex));
				Reader.INSTANCE.emit(m);
			}, new FixedBackOff(0L, 0L)));
			return f;
		}

		@Bean
		public Reader reader() {
			return new Reader(Integer.parseInt(opt("count")));
		}

	}

	/** What a Spring consumer of a shared topic reads, through Spring's own conversions. */
	public static class Reader {

		static volatile Reader INSTANCE;

		final CountDownLatch done;

		int seen;

		Reader(int count) {
			this.done = new CountDownLatch(count);
			INSTANCE = this;
		}

		synchronized void emit(Map<String, Object> m) {
			print(m);
			this.seen++;
			this.done.countDown();
		}

		@KafkaListener(id = "reader", topics = "#{systemProperties['interop.topics'].split(',')}",
				containerFactory = "readerFactory")
		public void on(Message<byte[]> message,
				@Header(KafkaHeaders.RECEIVED_TOPIC) String topic,
				@Header(KafkaHeaders.RECEIVED_PARTITION) int partition,
				@Header(KafkaHeaders.OFFSET) long offset,
				// the retry-topic family (KafkaHeaders.ORIGINAL_*, EXCEPTION_*)
				@Header(name = KafkaHeaders.ORIGINAL_TOPIC, required = false) byte[] originalTopic,
				@Header(name = KafkaHeaders.ORIGINAL_PARTITION, required = false) Integer originalPartition,
				@Header(name = KafkaHeaders.ORIGINAL_OFFSET, required = false) Long originalOffset,
				@Header(name = KafkaHeaders.ORIGINAL_TIMESTAMP, required = false) Long originalTimestamp,
				@Header(name = KafkaHeaders.ORIGINAL_CONSUMER_GROUP, required = false) byte[] group,
				@Header(name = KafkaHeaders.EXCEPTION_FQCN, required = false) byte[] exceptionFqcn,
				@Header(name = KafkaHeaders.EXCEPTION_CAUSE_FQCN, required = false) byte[] exceptionCauseFqcn,
				@Header(name = KafkaHeaders.EXCEPTION_MESSAGE, required = false) byte[] exceptionMessage,
				// the dead-letter family (KafkaHeaders.DLT_*)
				@Header(name = KafkaHeaders.DLT_ORIGINAL_TOPIC, required = false) byte[] dltOriginalTopic,
				@Header(name = KafkaHeaders.DLT_ORIGINAL_PARTITION, required = false) Integer dltOriginalPartition,
				@Header(name = KafkaHeaders.DLT_ORIGINAL_OFFSET, required = false) Long dltOriginalOffset,
				@Header(name = KafkaHeaders.DLT_ORIGINAL_TIMESTAMP, required = false) Long dltOriginalTimestamp,
				@Header(name = KafkaHeaders.DLT_EXCEPTION_FQCN, required = false) byte[] dltExceptionFqcn,
				@Header(name = KafkaHeaders.DLT_EXCEPTION_CAUSE_FQCN, required = false) byte[] dltExceptionCauseFqcn,
				@Header(name = KafkaHeaders.DLT_EXCEPTION_MESSAGE, required = false) byte[] dltExceptionMessage,
				// the retry-topic headers
				@Header(name = RetryTopicHeaders.DEFAULT_HEADER_ATTEMPTS, required = false) byte[] attempts,
				@Header(name = RetryTopicHeaders.DEFAULT_HEADER_BACKOFF_TIMESTAMP, required = false) byte[] backoff,
				@Header(name = RetryTopicHeaders.DEFAULT_HEADER_ORIGINAL_TIMESTAMP, required = false) byte[] origTs) {
			Map<String, Object> m = new LinkedHashMap<>();
			m.put("topic", topic);
			m.put("partition", partition);
			m.put("offset", offset);
			m.put("original_topic", text(originalTopic));
			m.put("original_partition", originalPartition);
			m.put("original_offset", originalOffset);
			m.put("original_timestamp", originalTimestamp);
			m.put("original_consumer_group", text(group));
			m.put("exception_fqcn", text(exceptionFqcn));
			m.put("exception_cause_fqcn", text(exceptionCauseFqcn));
			m.put("exception_message", text(exceptionMessage));
			m.put("dlt_original_topic", text(dltOriginalTopic));
			m.put("dlt_original_partition", dltOriginalPartition);
			m.put("dlt_original_offset", dltOriginalOffset);
			m.put("dlt_original_timestamp", dltOriginalTimestamp);
			m.put("dlt_exception_fqcn", text(dltExceptionFqcn));
			m.put("dlt_exception_cause_fqcn", text(dltExceptionCauseFqcn));
			m.put("dlt_exception_message", text(dltExceptionMessage));
			m.put("attempts_bytes", attempts == null ? null : hex(attempts));
			// KafkaMessageHeaderAccessor.getNonBlockingRetryDeliveryAttempt (what a listener asks)
			Object accessor;
			try {
				accessor = KafkaMessageHeaderAccessor.wrap(message).getNonBlockingRetryDeliveryAttempt();
			}
			catch (RuntimeException ex) {
				accessor = "error: " + ex;
			}
			m.put("attempts_accessor", accessor);
			// DeadLetterPublishingRecovererFactory.getAttempts (what the chain counts with)
			m.put("attempts_chain", chainAttempts(attempts));
			// KafkaBackoffAwareMessageListenerAdapter reads the due time as new BigInteger(...)
			m.put("backoff_timestamp", backoff == null ? null : new BigInteger(backoff).longValue());
			m.put("retry_original_timestamp", origTs == null ? null : new BigInteger(origTs).longValue());
			emit(m);
		}

	}

	static Object chainAttempts(byte[] attempts) {
		ConsumerRecord<byte[], byte[]> rec = new ConsumerRecord<>("t", 0, 0L, null, null);
		if (attempts != null) {
			rec.headers().add(RetryTopicHeaders.DEFAULT_HEADER_ATTEMPTS, attempts);
		}
		try {
			Method m = DeadLetterPublishingRecovererFactory.class.getDeclaredMethod("getAttempts",
					ConsumerRecord.class);
			m.setAccessible(true);
			return m.invoke(new DeadLetterPublishingRecovererFactory(null), rec);
		}
		catch (ReflectiveOperationException ex) {
			return "error: " + ex;
		}
	}

	// -- JSON lines ----------------------------------------------------------------------------

	static byte[] bytes(String s) {
		return s.getBytes(StandardCharsets.UTF_8);
	}

	static String text(byte[] b) {
		return b == null ? null : new String(b, StandardCharsets.UTF_8);
	}

	static String hex(byte[] b) {
		StringBuilder sb = new StringBuilder();
		for (byte x : b) {
			sb.append(String.format("%02x", x));
		}
		return sb.toString();
	}

	static synchronized void print(Map<String, Object> m) {
		StringBuilder sb = new StringBuilder("{");
		for (var e : m.entrySet()) {
			if (sb.length() > 1) {
				sb.append(", ");
			}
			sb.append(quote(e.getKey())).append(": ");
			Object v = e.getValue();
			sb.append(v == null ? "null" : v instanceof Number || v instanceof Boolean ? v.toString()
					: quote(v.toString()));
		}
		System.out.println(sb.append('}'));
		System.out.flush();
	}

	static String quote(String s) {
		StringBuilder sb = new StringBuilder("\"");
		for (char c : s.toCharArray()) {
			switch (c) {
				case '"' -> sb.append("\\\"");
				case '\\' -> sb.append("\\\\");
				case '\n' -> sb.append("\\n");
				case '\r' -> sb.append("\\r");
				case '\t' -> sb.append("\\t");
				default -> {
					if (c < 0x20) {
						sb.append(String.format("\\u%04x", (int) c));
					}
					else {
						sb.append(c);
					}
				}
			}
		}
		return sb.append('"').toString();
	}

}
